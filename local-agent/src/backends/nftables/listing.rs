//! Reading `nft list set` output one line at a time.
//!
//! Text rather than `nft -j`: a 100k-element set is 7 MB of JSON, which would have to be held whole, while
//! the text listing can be streamed through [`Parser::feed`] and costs no more than the elements found.
//! Only the `elements = { … }` part is read; each element is an address or prefix optionally followed by
//! `timeout T` and `expires E`.

use queue_message::Target;

/// Incremental parser of one set's listing.
#[derive(Debug, Default)]
pub struct Parser {
    in_elements: bool,
    done: bool,
    pending: Option<Target>,
    after_expires: bool,
    expires: Option<u64>,
}

/// Parses nft's time format (`1d2h3m4s500ms`, `59m58s996ms`) into whole seconds, rounded up.
pub fn parse_nft_time(text: &str) -> Option<u64> {
    let mut ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        ms = ms.checked_add(n.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(ms.div_ceil(1000))
}

impl Parser {
    fn flush(&mut self, out: &mut Vec<(Target, Option<u64>)>) {
        if let Some(target) = self.pending.take() {
            out.push((target, self.expires.take()));
        }
        self.expires = None;
        self.after_expires = false;
    }

    /// Feeds one line; complete elements are appended to `out` with their remaining seconds.
    pub fn feed(&mut self, line: &str, out: &mut Vec<(Target, Option<u64>)>) {
        if self.done {
            return;
        }
        let mut text = line;
        if !self.in_elements {
            match line.find("elements = {") {
                Some(at) => {
                    self.in_elements = true;
                    text = &line[at + "elements = {".len()..];
                }
                None => return,
            }
        }
        for raw in text.split_whitespace() {
            let mut token = raw;
            let mut closes = false;
            let mut ends_element = false;
            if let Some(t) = token.strip_suffix('}') {
                token = t;
                closes = true;
            }
            if let Some(t) = token.strip_suffix(',') {
                token = t;
                ends_element = true;
            }
            if token == "timeout" {
                self.after_expires = false;
            } else if token == "expires" {
                self.after_expires = true;
            } else if !token.is_empty() {
                if self.after_expires {
                    self.expires = parse_nft_time(token);
                    self.after_expires = false;
                } else if let Ok(target) = Target::parse(token) {
                    self.flush(out);
                    self.pending = Some(target);
                }
            }
            if ends_element || closes {
                self.flush(out);
            }
            if closes {
                self.done = true;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<(String, Option<u64>)> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for line in text.lines() {
            p.feed(line, &mut out);
        }
        out.into_iter().map(|(t, e)| (t.to_string(), e)).collect()
    }

    #[test]
    fn reads_elements_with_and_without_timeouts_across_lines() {
        let text = "table inet portcullis {\n\tset net4 {\n\t\ttype ipv4_addr\n\t\tflags interval,timeout\n\
                    \t\telements = { 198.51.100.0/24 timeout 15m expires 14m59s980ms, 203.0.113.7 timeout 1d expires 23h59m59s,\n\
                    \t\t\t     11.0.0.1,\n\t\t\t     2001:db8::/48 timeout 1h expires 1s }\n\t}\n}\n";
        assert_eq!(
            parse(text),
            [
                ("198.51.100.0/24".to_owned(), Some(900)),
                ("203.0.113.7".to_owned(), Some(86_399)),
                ("11.0.0.1".to_owned(), None),
                ("2001:db8::/48".to_owned(), Some(1)),
            ]
        );
    }

    #[test]
    fn an_empty_set_has_no_elements() {
        assert!(parse(
            "table inet p {\n\tset addr4 {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}\n}\n"
        )
        .is_empty());
    }

    #[test]
    fn nft_times() {
        assert_eq!(parse_nft_time("1d2h3m4s500ms"), Some(93_785));
        assert_eq!(parse_nft_time("996ms"), Some(1));
        assert_eq!(parse_nft_time("x"), None);
    }
}
