//! A service's address as its callers are given it: one base URL, or several separated by
//! commas, each a replica of the same service (`BOURSE_ORDERS_URL=http://orders-a:8082,
//! http://orders-b:8082`). A platform that spreads one name over its replicas (a Kubernetes
//! Service, Docker's DNS) needs one; replicas on hosts of their own, with nothing in front,
//! are listed, and the caller spreads its calls over them and steps past one that takes no
//! connection (`resilience::Upstream`).

/// The base URLs in `value`, in the order given, each without surrounding spaces or a
/// trailing slash; empty entries (a trailing comma) are dropped.
pub fn split(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|url| url.trim().trim_end_matches('/'))
        .filter(|url| !url.is_empty())
}

/// Whether every base URL in `value` is reached over TLS, and there is at least one.
pub fn all_https(value: &str) -> bool {
    let mut urls = split(value).peekable();
    urls.peek().is_some() && urls.all(|url| url.starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_read_in_order_without_spaces_slashes_or_empty_entries() {
        let urls: Vec<&str> = split(" http://a:1/, http://b:2 ,,").collect();
        assert_eq!(urls, ["http://a:1", "http://b:2"]);
        assert_eq!(split("http://a:1").collect::<Vec<_>>(), ["http://a:1"]);
        assert_eq!(split(" , ").count(), 0);
    }

    #[test]
    fn one_plaintext_replica_makes_the_list_plaintext() {
        assert!(all_https("https://a:1,https://b:2"));
        assert!(!all_https("https://a:1,http://b:2"));
        assert!(!all_https(""));
    }
}
