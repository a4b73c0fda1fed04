//! COPY: the text and CSV formats, parsed incrementally as CopyData arrives and produced for COPY TO.

use crate::error::CoordError;
use crate::sql::params::from_text;
use crate::sql::text::text;
use sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};
use tessera_shared::{PgType, Value};

/// A COPY format: Postgres' `text` (default) or `csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyFormat {
    /// CSV rather than text.
    pub csv: bool,
    /// Field delimiter (tab for text, comma for CSV).
    pub delimiter: u8,
    /// How NULL is written (`\N` for text, empty unquoted for CSV).
    pub null: String,
    /// The first line is a header (CSV only).
    pub header: bool,
    /// CSV quote character.
    pub quote: u8,
    /// CSV escape character (defaults to the quote).
    pub escape: u8,
}

impl CopyFormat {
    /// The format named by a COPY statement's options.
    pub fn from_options(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<CopyFormat, CoordError> {
        let mut csv = false;
        let mut delimiter = None;
        let mut null = None;
        let mut header = false;
        let mut quote = b'"';
        let mut escape = None;
        let byte = |c: char, what: &str| -> Result<u8, CoordError> {
            u8::try_from(u32::from(c)).map_err(|_| {
                CoordError::unsupported(format!("COPY {what} must be a single one-byte character"))
            })
        };
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_lowercase().as_str() {
                    "csv" => csv = true,
                    "text" => csv = false,
                    other => {
                        return Err(CoordError::unsupported(format!(
                            "COPY format \"{other}\" is not supported (use text or csv)"
                        )))
                    }
                },
                CopyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(byte(*c, "escape")?),
                // FREEZE, ENCODING (UTF8 only), FORCE_* are accepted and have no effect here.
                _ => {}
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Binary => {
                    return Err(CoordError::unsupported("COPY BINARY is not supported yet"))
                }
                CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        match c {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(q) => quote = byte(*q, "quote")?,
                            CopyLegacyCsvOption::Escape(e) => escape = Some(byte(*e, "escape")?),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(CopyFormat {
            csv,
            delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
            header,
            quote,
            escape: escape.unwrap_or(quote),
        })
    }

    /// Splits one text-format line into fields (`None` = NULL), undoing backslash escapes.
    fn text_fields(&self, line: &[u8]) -> Result<Vec<Option<String>>, String> {
        let mut out = Vec::new();
        for raw in line.split(|b| *b == self.delimiter) {
            if raw == self.null.as_bytes() {
                out.push(None);
                continue;
            }
            let mut v = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'\\' && i + 1 < raw.len() {
                    i += 1;
                    v.push(match raw[i] {
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'v' => 11,
                        other => other,
                    });
                } else {
                    v.push(raw[i]);
                }
                i += 1;
            }
            out.push(Some(String::from_utf8(v).map_err(|_| {
                "invalid byte sequence for encoding \"UTF8\"".to_string()
            })?));
        }
        Ok(out)
    }

    /// Splits one CSV record into fields: quoted fields keep delimiters and newlines; an
    /// unquoted field equal to the NULL string is NULL.
    fn csv_fields(&self, rec: &[u8]) -> Result<Vec<Option<String>>, String> {
        let mut out = Vec::new();
        let mut field = Vec::new();
        let mut quoted = false;
        let mut was_quoted = false;
        let mut i = 0;
        let finish = |field: &mut Vec<u8>,
                      was_quoted: bool,
                      out: &mut Vec<Option<String>>|
         -> Result<(), String> {
            let s = String::from_utf8(std::mem::take(field))
                .map_err(|_| "invalid byte sequence for encoding \"UTF8\"".to_string())?;
            out.push(if !was_quoted && s == self.null {
                None
            } else {
                Some(s)
            });
            Ok(())
        };
        while i < rec.len() {
            let b = rec[i];
            if quoted {
                if b == self.escape && i + 1 < rec.len() && rec[i + 1] == self.quote {
                    field.push(self.quote);
                    i += 2;
                    continue;
                }
                if b == self.quote {
                    quoted = false;
                } else {
                    field.push(b);
                }
            } else if b == self.quote {
                quoted = true;
                was_quoted = true;
            } else if b == self.delimiter {
                finish(&mut field, was_quoted, &mut out)?;
                was_quoted = false;
            } else {
                field.push(b);
            }
            i += 1;
        }
        if quoted {
            return Err("unterminated CSV quoted field".into());
        }
        finish(&mut field, was_quoted, &mut out)?;
        Ok(out)
    }

    /// One row in this format, with its line ending.
    pub fn format_row(&self, row: &[Value], types: &[PgType]) -> String {
        let mut line = String::new();
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                line.push(self.delimiter as char);
            }
            let ty = types.get(i).copied().unwrap_or(PgType::Text);
            match text(v, ty) {
                None => line.push_str(&self.null),
                Some(s) if self.csv => {
                    let q = self.quote as char;
                    let needs = s.is_empty()
                        || s.contains([self.delimiter as char, q, '\n', '\r'])
                        || s == self.null;
                    if needs {
                        line.push(q);
                        line.push_str(&s.replace(q, &format!("{}{q}", self.escape as char)));
                        line.push(q);
                    } else {
                        line.push_str(&s);
                    }
                }
                Some(s) => {
                    for c in s.chars() {
                        match c {
                            '\\' => line.push_str("\\\\"),
                            '\n' => line.push_str("\\n"),
                            '\r' => line.push_str("\\r"),
                            '\t' => line.push_str("\\t"),
                            c if c == self.delimiter as char => {
                                line.push('\\');
                                line.push(c);
                            }
                            c => line.push(c),
                        }
                    }
                }
            }
        }
        line.push('\n');
        line
    }

    /// The header line of a CSV export.
    pub fn header_line(&self, names: &[String]) -> String {
        let mut s = names.join(&(self.delimiter as char).to_string());
        s.push('\n');
        s
    }
}

/// An incremental COPY FROM parser: bytes in, typed rows out, errors naming the line.
#[derive(Debug)]
pub struct CopyParser {
    format: CopyFormat,
    types: Vec<PgType>,
    names: Vec<String>,
    table: String,
    pending: Vec<u8>,
    line: u64,
    header_pending: bool,
    done: bool,
}

impl CopyParser {
    /// A parser for rows of `types` (the COPY column list) into `table`.
    pub fn new(
        format: CopyFormat,
        table: &str,
        names: Vec<String>,
        types: Vec<PgType>,
    ) -> CopyParser {
        let header_pending = format.header && format.csv;
        CopyParser {
            format,
            types,
            names,
            table: table.to_string(),
            pending: Vec::new(),
            line: 0,
            header_pending,
            done: false,
        }
    }

    /// Feeds bytes; appends every complete row to `rows`.
    pub fn feed(&mut self, data: &[u8], rows: &mut Vec<Vec<Value>>) -> Result<(), CoordError> {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        let mut quoted = false;
        let mut i = 0;
        while i < self.pending.len() {
            let b = self.pending[i];
            if self.format.csv && b == self.format.quote {
                quoted = !quoted;
            } else if b == b'\n' && !quoted {
                let mut rec = &self.pending[start..i];
                if rec.last() == Some(&b'\r') {
                    rec = &rec[..rec.len() - 1];
                }
                let rec = rec.to_vec();
                start = i + 1;
                if let Err(e) = self.record(&rec, rows) {
                    self.pending.drain(..start);
                    return Err(e);
                }
            }
            i += 1;
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Parses a last line without a newline.
    pub fn finish(&mut self, rows: &mut Vec<Vec<Value>>) -> Result<(), CoordError> {
        if !self.pending.is_empty() {
            let rec = std::mem::take(&mut self.pending);
            self.record(&rec, rows)?;
        }
        Ok(())
    }

    fn error(&self, msg: impl std::fmt::Display) -> CoordError {
        CoordError::Storage {
            sqlstate: "22P04".into(),
            message: format!("COPY {}, line {}: {msg}", self.table, self.line),
        }
    }

    fn record(&mut self, rec: &[u8], rows: &mut Vec<Vec<Value>>) -> Result<(), CoordError> {
        // Line numbers count physical lines, as Postgres reports them (a quoted CSV field may span several).
        self.line += 1 + rec.iter().filter(|b| **b == b'\n').count() as u64;
        if self.done {
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(());
        }
        if !self.format.csv && rec == b"\\." {
            self.done = true;
            return Ok(());
        }
        let fields = if self.format.csv {
            self.format.csv_fields(rec)
        } else {
            self.format.text_fields(rec)
        }
        .map_err(|m| self.error(m))?;
        if fields.len() != self.types.len() {
            let what = if fields.len() < self.types.len() {
                "missing data for column"
            } else {
                "extra data after last expected column"
            };
            let col = self
                .names
                .get(fields.len().min(self.types.len().saturating_sub(1)))
                .cloned()
                .unwrap_or_default();
            return Err(self.error(format!("{what} \"{col}\"")));
        }
        let mut row = Vec::with_capacity(fields.len());
        for (i, (f, ty)) in fields.into_iter().zip(&self.types).enumerate() {
            row.push(match f {
                None => Value::Null,
                Some(s) => from_text(&s, *ty).map_err(|e| {
                    self.error(format!(
                        "column {}: {e}",
                        self.names.get(i).cloned().unwrap_or_default()
                    ))
                })?,
            });
        }
        rows.push(row);
        Ok(())
    }
}

/// A COPY FROM STDIN in progress on a session.
#[derive(Debug)]
pub struct CopyIn {
    pub(crate) parser: CopyParser,
    /// `INSERT INTO t (cols) VALUES (...)`, the template of every batch.
    pub(crate) insert: sqlparser::ast::Insert,
    pub(crate) width: usize,
    pub(crate) rows: Vec<Vec<tessera_shared::Value>>,
    pub(crate) total: u64,
    /// The first error: later data is ignored, CopyDone reports it.
    pub(crate) error: Option<crate::error::CoordError>,
    /// The COPY opened its own transaction (no BEGIN was active).
    pub(crate) implicit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_fmt() -> CopyFormat {
        CopyFormat::from_options(&[], &[]).expect("fmt")
    }

    fn csv_fmt(header: bool) -> CopyFormat {
        CopyFormat {
            csv: true,
            delimiter: b',',
            null: String::new(),
            header,
            quote: b'"',
            escape: b'"',
        }
    }

    #[test]
    fn text_rows_split_across_chunks() {
        let mut p = CopyParser::new(
            text_fmt(),
            "t",
            vec!["a".into(), "b".into()],
            vec![PgType::Int8, PgType::Text],
        );
        let mut rows = Vec::new();
        p.feed(b"1\thello\\tworld\n2\t\\N\n3\tx", &mut rows)
            .expect("feed");
        assert_eq!(rows.len(), 2);
        p.feed(b"y\n\\.\n", &mut rows).expect("feed");
        p.finish(&mut rows).expect("finish");
        assert_eq!(
            rows[0],
            vec![Value::Integer(1), Value::Text("hello\tworld".into())]
        );
        assert_eq!(rows[1][1], Value::Null);
        assert_eq!(rows[2], vec![Value::Integer(3), Value::Text("xy".into())]);
    }

    #[test]
    fn csv_quotes_header_and_errors_name_the_line() {
        let mut p = CopyParser::new(
            csv_fmt(true),
            "t",
            vec!["a".into(), "b".into()],
            vec![PgType::Int4, PgType::Text],
        );
        let mut rows = Vec::new();
        p.feed(b"a,b\n1,\"x,\"\"y\"\"\nz\"\n2,\n3,\"\"\n", &mut rows)
            .expect("feed");
        assert_eq!(rows[0][1], Value::Text("x,\"y\"\nz".into()));
        assert_eq!(rows[1][1], Value::Null);
        assert_eq!(rows[2][1], Value::Text(String::new()));
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(p.line, 5);
        let e = p.feed(b"oops,1\n", &mut rows).expect_err("bad int");
        assert!(e.to_string().contains("line 6"), "{e}");
        let e = p.feed(b"7\n", &mut rows).expect_err("short");
        assert!(e.to_string().contains("missing data"), "{e}");
    }

    #[test]
    fn formatting_round_trips() {
        let f = text_fmt();
        let row = vec![
            Value::Integer(1),
            Value::Text("a\tb\\c".into()),
            Value::Null,
        ];
        let line = f.format_row(&row, &[PgType::Int8, PgType::Text, PgType::Text]);
        assert_eq!(line, "1\ta\\tb\\\\c\t\\N\n");
        let mut p = CopyParser::new(
            f,
            "t",
            vec!["a".into(), "b".into(), "c".into()],
            vec![PgType::Int8, PgType::Text, PgType::Text],
        );
        let mut rows = Vec::new();
        p.feed(line.as_bytes(), &mut rows).expect("feed");
        assert_eq!(rows[0], row);
        let c = csv_fmt(false);
        assert_eq!(
            c.format_row(
                &[Value::Text("x,\"y".into()), Value::Null],
                &[PgType::Text, PgType::Text]
            ),
            "\"x,\"\"y\",\n"
        );
    }
}
