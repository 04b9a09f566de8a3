//! Shared by the fuzz targets: delivers input in chunks, as a network would.

/// Splits `wire` into chunks whose sizes alternate between `sizes[0] + 1`
/// and `sizes[1] + 1` bytes.
pub fn chunks(mut wire: &[u8], sizes: [u8; 2]) -> impl Iterator<Item = &[u8]> {
    sizes.into_iter().cycle().map_while(move |size| {
        if wire.is_empty() {
            return None;
        }
        let (chunk, rest) = wire.split_at((usize::from(size) + 1).min(wire.len()));
        wire = rest;
        Some(chunk)
    })
}
