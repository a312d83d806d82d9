//! Header names as CGI-style servers (WSGI, Rack, PHP) read them: `_` and `.` count as
//! `-`, so `X_User_Id`, `X.User.Id` and `X-User-Id` are one variable there (`HTTP_X_USER_ID`).
//! Whatever the gateway sets or withholds, it must set or withhold in every such spelling;
//! the configuration is checked the same way.

/// A byte of a header name as a CGI-style server reads it.
fn dash(byte: u8) -> u8 {
    if byte == b'_' || byte == b'.' {
        b'-'
    } else {
        byte
    }
}

/// Whether two header names read the same to a CGI-style server. Compares in place: this
/// runs for every header of every request against every name the gateway sets.
pub fn reads_as(name: &str, other: &str) -> bool {
    name.len() == other.len()
        && name
            .bytes()
            .zip(other.bytes())
            .all(|(a, b)| dash(a) == dash(b))
}

/// Whether `name` begins with what reads as `prefix` (see [`reads_as`]).
pub fn begins_reading_as(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| dash(a) == dash(b))
}
