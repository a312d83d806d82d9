//! Numbers and IP addresses written as text without `core::fmt`: on the request path its
//! machinery (a trait object per argument, padding options) cost ~1,000 instructions for
//! one address, ten times the digits themselves.

use std::net::IpAddr;

/// The longest text of an IP address (IPv6 with an embedded IPv4 address).
pub const MAX_IP_TEXT: usize = 45;

/// `value`'s decimal digits, written at the end of `digits`.
pub fn decimal(value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &digits[at..]
}

/// Appends `value` in decimal.
pub fn push_decimal(value: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(decimal(value, &mut [0; 20]));
}

/// Appends `value` in decimal.
pub fn push_decimal_str(value: u64, out: &mut String) {
    for &digit in decimal(value, &mut [0; 20]) {
        out.push(char::from(digit));
    }
}

/// Appends `address` as `Display` writes it (IPv4 by hand; IPv6, rarer and with its
/// zero-run rules, through `Display`).
pub fn push_ip(address: IpAddr, out: &mut String) {
    match address {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal_str(u64::from(octet), out);
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            // Writing to a `String` cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_and_addresses_read_as_display_writes_them() {
        for value in [0, 7, 10, 99, 100, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(value, &mut out);
            assert_eq!(out, value.to_string().as_bytes());
        }
        for address in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.255",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.128",
        ] {
            let mut out = String::new();
            push_ip(address.parse().unwrap(), &mut out);
            assert_eq!(out, address);
        }
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert!(longest.to_string().len() <= MAX_IP_TEXT);
    }

    proptest! {
        #[test]
        fn any_address_and_number_as_display(
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u16; 8]>(),
            value in any::<u64>(),
        ) {
            for address in [IpAddr::from(v4), IpAddr::from(v6)] {
                let mut out = String::new();
                push_ip(address, &mut out);
                prop_assert_eq!(out, address.to_string());
            }
            let mut out = String::new();
            push_decimal_str(value, &mut out);
            prop_assert_eq!(out, value.to_string());
        }
    }
}
