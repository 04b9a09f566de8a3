//! Negotiation of the permessage-deflate extension (RFC 7692 §7): parsing
//! every offer in `Sec-WebSocket-Extensions` and choosing the answer. The
//! compression itself is in [`super::deflate`].

use super::http::HttpRequest;

/// What the server is willing to do with permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Reset the server's compressor after every message (saves memory
    /// per connection; compresses worse).
    pub server_no_context_takeover: bool,
    /// Ask the client to reset its compressor after every message, so the
    /// server's inflater needs no window between messages.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window the server compresses with (9-15).
    pub server_max_window_bits: u8,
    /// Largest window the server lets the client compress with (9-15),
    /// when the client says it can limit itself. Smaller windows cost the
    /// server less memory per connection.
    pub client_max_window_bits: u8,
    /// Outgoing messages shorter than this go uncompressed: on small
    /// messages deflate saves little and costs a compressor's time.
    pub min_compress_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            min_compress_size: 256,
        }
    }
}

/// The agreed parameters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server compresses with at most this window.
    pub server_max_window_bits: u8,
    /// The client compresses with at most this window.
    pub client_max_window_bits: u8,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value that confirms these parameters.
    /// `client_window_offered`: whether the client's offer had
    /// `client_max_window_bits` (only then may the answer name it).
    fn response(&self, client_window_offered: bool) -> String {
        let mut value = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            value.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if client_window_offered && self.client_max_window_bits < 15 {
            value.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        }
        value
    }
}

/// One client offer, as parsed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Splits `s` on `separator` outside double-quoted strings.
fn split_outside_quotes(s: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Unquotes a parameter value (`"10"` → `10`); `None` if malformed.
fn unquote(raw: &str) -> Option<String> {
    let Some(inner) = raw.strip_prefix('"') else {
        return Some(raw.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// A window size parameter: 1-2 decimal digits, 8 to 15.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty()
        || value.len() > 2
        || !value.bytes().all(|b| b.is_ascii_digit())
        || value.starts_with('0')
    {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Parses the parameters of one permessage-deflate offer; `None` declines
/// it (unknown or repeated parameter, bad value).
fn parse_offer(params: &[&str]) -> Option<Offer> {
    let mut offer = Offer::default();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !offer.server_no_context_takeover => {
                offer.server_no_context_takeover = true;
            }
            ("client_no_context_takeover", None) if !offer.client_no_context_takeover => {
                offer.client_no_context_takeover = true;
            }
            ("server_max_window_bits", Some(value)) if offer.server_max_window_bits.is_none() => {
                offer.server_max_window_bits = Some(window_bits(&value)?);
            }
            ("client_max_window_bits", value) if offer.client_max_window_bits.is_none() => {
                offer.client_max_window_bits = Some(match value {
                    Some(value) => Some(window_bits(&value)?),
                    None => None,
                });
            }
            _ => return None,
        }
    }
    Some(offer)
}

/// Chooses the answer to the client's permessage-deflate offers: the
/// first offer the server can honour, as agreed parameters plus the
/// `Sec-WebSocket-Extensions` response value; `None` means no extension
/// (no offer, or none acceptable).
pub fn negotiate_permessage_deflate(
    request: &HttpRequest<'_>,
    config: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    let values = request
        .header_values("sec-websocket-extensions")
        .filter_map(|v| std::str::from_utf8(v).ok());
    for value in values {
        for extension in split_outside_quotes(value, ',') {
            let mut parts = split_outside_quotes(extension, ';').into_iter();
            let name = parts.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                continue;
            }
            let params: Vec<&str> = parts.collect();
            let Some(offer) = parse_offer(&params) else {
                continue;
            };
            // zlib cannot compress with an 8-bit window: an offer that
            // limits the server to 8 is declined, as RFC 7692 §7.1.2.1
            // requires when the limit cannot be honoured.
            let server_bits = offer
                .server_max_window_bits
                .unwrap_or(15)
                .min(config.server_max_window_bits);
            if server_bits < 9 {
                continue;
            }
            let client_bits = match offer.client_max_window_bits {
                Some(Some(bits)) => bits.min(config.client_max_window_bits),
                Some(None) => config.client_max_window_bits,
                // Without the parameter the client may use 15: the server
                // cannot ask for less, so it must accept 15.
                None => 15,
            };
            let params = DeflateParams {
                server_no_context_takeover: offer.server_no_context_takeover
                    || config.server_no_context_takeover,
                client_no_context_takeover: offer.client_no_context_takeover
                    || config.client_no_context_takeover,
                server_max_window_bits: server_bits,
                // An offered 8 is answered with 8 (the answer may not be
                // larger); the inflater reads such streams with 9 bits.
                client_max_window_bits: client_bits,
            };
            let response = params.response(offer.client_max_window_bits.is_some());
            return Some((params, response));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(values: &[&str], config: DeflateConfig) -> Option<(DeflateParams, String)> {
        let headers: Vec<httparse::Header<'_>> = values
            .iter()
            .map(|v| httparse::Header {
                name: "Sec-WebSocket-Extensions",
                value: v.as_bytes(),
            })
            .collect();
        let request = HttpRequest {
            method: "GET",
            target: "/",
            minor_version: 1,
            headers: &headers,
            body: &[],
        };
        negotiate_permessage_deflate(&request, &config)
    }

    fn answer(values: &[&str]) -> Option<String> {
        negotiate(values, DeflateConfig::default()).map(|(_, response)| response)
    }

    #[test]
    fn the_browser_offer_is_accepted() {
        // The offer Chrome sends (seed capture 000).
        let (params, response) = negotiate(
            &["permessage-deflate; client_max_window_bits"],
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(response, "permessage-deflate");
        assert_eq!(params.client_max_window_bits, 15);
        assert_eq!(params.server_max_window_bits, 15);
        assert_eq!(answer(&[]), None);
        assert_eq!(answer(&["x-webkit-deflate-frame"]), None);
    }

    #[test]
    fn parameters_are_honoured_and_echoed() {
        assert_eq!(
            answer(&["permessage-deflate; server_no_context_takeover; server_max_window_bits=10"])
                .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
        );
        assert_eq!(
            answer(&[
                "permessage-deflate; client_max_window_bits=\"12\"; client_no_context_takeover"
            ])
            .as_deref(),
            Some("permessage-deflate; client_no_context_takeover; client_max_window_bits=12")
        );
        let config = DeflateConfig {
            client_no_context_takeover: true,
            client_max_window_bits: 11,
            ..DeflateConfig::default()
        };
        let (params, response) =
            negotiate(&["permessage-deflate; client_max_window_bits"], config).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=11"
        );
        assert!(params.client_no_context_takeover);
        // Without client_max_window_bits in the offer the answer may not name it.
        let (_, response) = negotiate(&["permessage-deflate"], config).unwrap();
        assert_eq!(response, "permessage-deflate; client_no_context_takeover");
    }

    #[test]
    fn a_client_window_of_8_is_answered_with_8_never_more() {
        // RFC 7692 §7.1.2.2: the answer may not exceed the offer.
        let (params, response) = negotiate(
            &["permessage-deflate; client_max_window_bits=8"],
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(response, "permessage-deflate; client_max_window_bits=8");
        assert_eq!(params.client_max_window_bits, 8);
    }

    #[test]
    fn a_bad_offer_is_declined_and_the_next_one_tried() {
        for bad in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits=\"1 0\"",
            "permessage-deflate; server_max_window_bits=8",
        ] {
            assert_eq!(answer(&[bad]), None, "{bad}");
            let with_fallback = format!("{bad}, permessage-deflate; client_max_window_bits");
            assert_eq!(
                answer(&[&with_fallback]).as_deref(),
                Some("permessage-deflate"),
                "{bad}"
            );
        }
        // Offers spread over several header lines are all considered.
        assert_eq!(
            answer(&[
                "permessage-deflate; bogus",
                "permessage-deflate; server_max_window_bits=12"
            ])
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=12")
        );
    }

    #[test]
    fn quoted_values_may_hide_separators() {
        assert_eq!(
            split_outside_quotes("a; b=\"x;y\"; c", ';'),
            ["a", " b=\"x;y\"", " c"]
        );
        assert_eq!(unquote("\"1\\5\""), Some("15".to_owned()));
        assert_eq!(unquote("\"open"), None);
    }
}
