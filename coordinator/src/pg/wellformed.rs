//! The shape of each client message, checked before pgwire decodes it: counts that are not
//! negative, lengths that stay inside the message, strings that end. pgwire's decoder assumes
//! these and panics on some messages that break them, so a message that fails here is refused
//! (`08P01`) and never reaches it.

/// Why a message body is malformed.
pub type Malformed = &'static str;

/// SQL text that is not UTF-8 (PostgreSQL's `22021`, where the others are `08P01`).
pub const INVALID_UTF8: Malformed = "invalid byte sequence for encoding \"UTF8\"";

/// A cursor over a message body.
struct Body<'a> {
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err("message ends early");
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn cstring(&mut self) -> Result<&'a [u8], Malformed> {
        let end = self
            .rest
            .iter()
            .position(|b| *b == 0)
            .ok_or("string without its terminator")?;
        let s = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Ok(s)
    }

    /// A string of SQL text, which must be UTF-8 (the only client encoding served).
    fn text(&mut self) -> Result<(), Malformed> {
        let s = self.cstring()?;
        std::str::from_utf8(s).map(|_| ()).map_err(|_| INVALID_UTF8)
    }

    fn i16(&mut self) -> Result<i16, Malformed> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self) -> Result<usize, Malformed> {
        usize::try_from(self.i16()?).map_err(|_| "negative count")
    }

    /// Format codes: `n` codes, each text (0) or binary (1).
    fn formats(&mut self) -> Result<(), Malformed> {
        let n = self.count()?;
        for _ in 0..n {
            if !matches!(self.i16()?, 0 | 1) {
                return Err("unknown format code");
            }
        }
        Ok(())
    }

    fn values(&mut self) -> Result<(), Malformed> {
        let n = self.count()?;
        for _ in 0..n {
            match self.i32()? {
                -1 => {}
                len if len >= 0 => {
                    self.take(len as usize)?;
                }
                _ => return Err("negative value length"),
            }
        }
        Ok(())
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("message longer than its fields")
        }
    }
}

/// Whether messages of type `ty` are checked (the others are empty, opaque bytes, or decoded
/// only during authentication).
pub fn checked(ty: u8) -> bool {
    matches!(
        ty,
        b'P' | b'B' | b'E' | b'D' | b'C' | b'Q' | b'S' | b'H' | b'X' | b'c' | b'f' | b'F'
    )
}

/// Checks the body of a message of type `ty` (without type byte and length).
pub fn check(ty: u8, body: &[u8]) -> Result<(), Malformed> {
    let mut b = Body { rest: body };
    match ty {
        // Parse: name, query, parameter type OIDs.
        b'P' => {
            b.cstring()?;
            b.text()?;
            let n = b.count()?;
            b.take(n * 4)?;
        }
        // Bind: portal, statement, parameter formats, parameters, result formats.
        b'B' => {
            b.cstring()?;
            b.cstring()?;
            b.formats()?;
            b.values()?;
            b.formats()?;
        }
        // Execute: portal, row limit.
        b'E' => {
            b.cstring()?;
            b.i32()?;
        }
        // Describe and Close: statement or portal, name.
        b'D' | b'C' => {
            if !matches!(b.take(1)?[0], b'S' | b'P') {
                return Err("neither a statement nor a portal");
            }
            b.cstring()?;
        }
        b'Q' => b.text()?,
        b'f' => {
            b.cstring()?;
        }
        // FunctionCall: function, argument formats, arguments, result format.
        b'F' => {
            b.i32()?;
            b.formats()?;
            b.values()?;
            b.i16()?;
        }
        // Sync, Flush, Terminate, CopyDone.
        _ => {}
    }
    b.end()
}

/// Checks a startup packet's body after its protocol code: `name\0value\0` pairs, then `\0`.
pub fn check_startup_parameters(body: &[u8]) -> Result<(), Malformed> {
    let mut b = Body { rest: body };
    loop {
        if b.cstring()?.is_empty() {
            return b.end();
        }
        b.cstring()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_messages_pass() {
        check(b'P', b"s1\0select $1\0\x00\x01\x00\x00\x00\x17").expect("parse");
        let mut bind = b"\0s1\0\x00\x01\x00\x01\x00\x01\x00\x00\x00\x04".to_vec();
        bind.extend([0, 0, 0, 7, 0, 0]);
        check(b'B', &bind).expect("bind");
        check(b'E', b"\0\0\0\0\0").expect("execute");
        check(b'D', b"Sname\0").expect("describe");
        check(b'Q', b"select 1\0").expect("query");
        check(b'S', b"").expect("sync");
        check_startup_parameters(b"user\0postgres\0database\0x\0\0").expect("startup");
    }

    #[test]
    fn the_reported_malformed_messages_fail() {
        assert!(check(b'E', b"\0\0\0").is_err(), "an Execute of 4 bytes");
        assert!(
            check(b'P', b"\0select 1\0\xff\xff").is_err(),
            "parameter count -1"
        );
        assert!(
            check(b'B', b"\0\0\x00\x00\x00\x01\x7f\xff\xff\xff").is_err(),
            "a parameter longer than the message"
        );
        assert!(
            check(b'B', b"\0\0\xff\xfb").is_err(),
            "negative format count"
        );
        assert!(
            check(b'B', b"\0\0\x00\x01\x00\x07\x00\x00\x00\x00").is_err(),
            "format 7"
        );
        assert!(check(b'D', b"X\0").is_err());
        assert!(check(b'Q', b"no terminator").is_err());
        assert!(check(b'S', b"x").is_err(), "a Sync with a body");
        assert!(check_startup_parameters(b"user\0postgres").is_err());
        assert_eq!(check(b'Q', b"select '\xff'\0"), Err(INVALID_UTF8));
    }
}
