//! Header names as CGI-style servers read them: WSGI, Rack and PHP count `_` and `.` as
//! `-`, lighttpd's CGI, FastCGI and SCGI every byte that is not a letter or a digit, so
//! `X_User_Id`, `X.User.Id`, `X+User~Id` and `X-User-Id` can all become `HTTP_X_USER_ID`.
//! Whatever the gateway sets or withholds, it must set or withhold in every such spelling;
//! the configuration is checked the same way.

/// A byte of a header name as a CGI-style server reads it: anything but a letter or a
/// digit is a separator.
fn dash(byte: u8) -> u8 {
    if byte.is_ascii_alphanumeric() {
        byte
    } else {
        b'-'
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
