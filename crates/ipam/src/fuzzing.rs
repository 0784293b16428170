//! Entry points for the fuzz targets in `fuzz/`, also replayed over the corpus by unit tests.

use crate::{CidrList, indexed_ip};

/// Fuzzes the CIDR-list parser: it never panics, and whatever it accepts prints back to a
/// value that parses to the same list.
pub fn cidr_list(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<&str> = text.split('\n').collect();
    if let Ok(list) = CidrList::parse("cluster-cidr", &values) {
        let again = CidrList::parse("cluster-cidr", &[list.to_string()]);
        assert_eq!(
            again,
            Ok(list),
            "a parsed list must round-trip through Display"
        );
        for cidr in list.iter() {
            assert!(indexed_ip(cidr, 0).is_ok_and(|ip| cidr.contains(ip)));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Replays the fuzz corpus so the target keeps compiling and its inputs keep passing.

    use std::path::Path;

    #[test]
    fn replay_cidr_list_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/cidr_list");
        let mut replayed = 0;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap_or_default();
                super::cidr_list(&data);
                replayed += 1;
            }
        }
        // Inputs that are known to matter, whether or not the corpus directory exists yet.
        for input in [
            &b"10.42.0.0/16,fd00:42::/56"[..],
            b"10.42.1.0/16",
            b"0.0.0.0/0\n::/0",
            b"::/0",
            b"1.2.3.4/33",
        ] {
            super::cidr_list(input);
            replayed += 1;
        }
        assert!(replayed >= 5);
    }
}
