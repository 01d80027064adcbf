//! `multipart/form-data` bodies, as teloxide sends a request with a file
//! (`sendPhoto`, `setWebhook`): each part's name, file name and bytes,
//! which may be binary.

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) name: String,
    /// Set for a file.
    pub(super) file_name: Option<String>,
    pub(super) bytes: Vec<u8>,
}

/// The boundary a `multipart/form-data` content type names, if any.
pub(super) fn boundary(content_type: &str) -> Option<&str> {
    content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
}

/// The parts of `body` between `--boundary` lines; `None` when a part has
/// no name.
pub(super) fn parts(boundary: &str, body: &[u8]) -> Option<Vec<Part>> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    // Each part: `\r\n` headers `\r\n\r\n` value `\r\n`; the last is `--`.
    for part in split(body, delimiter.as_bytes()).skip(1) {
        let Some(at) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..at]);
        let value = &part[at + 4..];
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let quoted = |key: &str| {
            head.split_once(&format!("{key}=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_owned())
        };
        parts.push(Part {
            name: quoted(" name")?,
            file_name: quoted("filename"),
            bytes: value.to_vec(),
        });
    }
    Some(parts)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut body: &'a [u8], delimiter: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        match find(body, delimiter) {
            Some(at) => {
                let piece = &body[..at];
                body = &body[at + delimiter.len()..];
                Some(piece)
            }
            None => Some(std::mem::take(&mut body)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_parts_keep_their_bytes() {
        let mut body = b"--B\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n\
                         --B\r\nContent-Disposition: form-data; name=\"photo\"; \
                         filename=\"chart.png\"\r\nContent-Type: image/png\r\n\r\n"
            .to_vec();
        body.extend_from_slice(&[0x89, b'P', 0, b'\r', b'\n', 0xff]);
        body.extend_from_slice(b"\r\n--B--\r\n");
        let parts = parts(boundary("multipart/form-data; boundary=B").unwrap(), &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((&*parts[0].name, &*parts[0].bytes), ("chat_id", &b"42"[..]));
        assert_eq!(parts[1].file_name.as_deref(), Some("chart.png"));
        assert_eq!(parts[1].bytes, [0x89, b'P', 0, b'\r', b'\n', 0xff]);
    }
}
