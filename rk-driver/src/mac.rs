//! Ethernet (MAC) addresses as drivers show them.

/// `aa:bb:cc:dd:ee:ff` (lower case, as `ip link` prints it).
pub fn format(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_lower_case_colon_separated() {
        assert_eq!(
            super::format(&[0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee]),
            "5a:94:ef:e4:0c:ee"
        );
        assert_eq!(super::format(&[2, 0, 0, 0, 0, 1]), "02:00:00:00:00:01");
    }
}
