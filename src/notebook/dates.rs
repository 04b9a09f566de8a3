//! The two date formats of Zeppelin notes: `2019-03-08T16:57:41+0800` on
//! the wire, `2019-03-08 16:57:41.123` on disk. Notes keep the disk format
//! in memory (lossless: milliseconds survive a load and save) and are
//! converted once per outgoing message.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

const WIRE: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
);
const DISK: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");

/// A moment, formatted for the wire (UTC).
fn wire(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(WIRE)
        .unwrap_or_default()
}

/// The current time in the disk format (UTC).
pub fn now_disk() -> String {
    OffsetDateTime::now_utc().format(DISK).unwrap_or_default()
}

/// Converts a date read from disk to the wire format. Disk dates carry no
/// zone and are taken as UTC; strings in neither format are kept as given.
pub fn disk_to_wire(value: &str) -> String {
    if let Ok(local) = PrimitiveDateTime::parse(value, DISK) {
        return wire(local.assume_utc());
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_dates_convert_to_wire_dates() {
        assert_eq!(
            disk_to_wire("2019-02-26 16:54:09.123"),
            "2019-02-26T16:54:09+0000"
        );
        assert_eq!(disk_to_wire("not a date"), "not a date");
        assert_eq!(
            disk_to_wire("2019-03-08T16:57:41+0800"),
            "2019-03-08T16:57:41+0800"
        );
        let now = now_disk();
        assert_eq!(now.len(), "2019-02-26 16:54:09.123".len());
        assert!(disk_to_wire(&now).ends_with("+0000"));
    }
}
