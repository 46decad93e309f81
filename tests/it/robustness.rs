//! Issue 17: whatever the API sends is stored as sent, costs memory bounded by configuration,
//! and one record the exporter cannot represent never blocks the export.

use std::path::Path;

use aos_audit_export::dedup::Deduper;
use aos_audit_export::sink::{BufferBudget, Compression, Format, OutRecord, SinkOptions, WindowWriter};

/// Writes each record text (as a page delivers it) through a window writer into `dir`.
fn write_texts(dir: &Path, format: Format, texts: &[&str]) {
    let root = dir.to_path_buf();
    let opts = SinkOptions {
        format,
        compression: Compression::None,
        row_group_rows: 1000,
        file_max_rows: 100_000,
        file_max_bytes: 1 << 30,
        buffer: BufferBudget::new(64 << 20),
    };
    let mut w = WindowWriter::new(opts, "t".into(), chrono::Utc::now(), Box::new(move |rel: &str| root.join(rel)));
    let mut dedup = Deduper::new([], &[]);
    for text in texts {
        aos_audit_export::model::page_index::with_record(text, |rec| {
            let (id, new) = dedup.admit(rec, rec.time.is_some());
            assert!(new);
            w.write(OutRecord {
                rec,
                id: &id,
                time: rec.time,
            })
            .unwrap();
        })
        .unwrap();
    }
    for f in w.finish().unwrap() {
        std::fs::create_dir_all(dir.join(&f.rel_path).parent().unwrap()).unwrap();
        std::fs::rename(&f.temp_path, dir.join(&f.rel_path)).unwrap();
    }
}

/// The text of one string column of every Parquet file under `dir`.
fn parquet_column(dir: &Path, column: &str) -> Vec<Option<String>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let mut out = Vec::new();
    for path in crate::common::data_files(dir) {
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            for (name, field) in row.get_column_iter() {
                if name == column {
                    out.push(match field {
                        Field::Str(s) => Some(s.clone()),
                        _ => None,
                    });
                }
            }
        }
    }
    out
}

/// `additionalDetails` is audit evidence: stored as sent, whitespace between tokens aside.
/// (Before: any whitespace made it go through `serde_json::Value`, which rounded a big integer,
/// re-spelled `1E+2` and `-0`, and dropped the first of two repeated keys.)
#[test]
fn additional_details_are_stored_as_sent() {
    let sent = r#"{ "n": 12345678901234567890123, "e": 1E+2, "z": -0, "k": 1, "k": 2, "s": "a b" }"#;
    let record = format!(r#"{{"actionTime":"2024-03-01T10:00:00Z","additionalDetails":{sent}}}"#);
    let dir = tempfile::tempdir().unwrap();
    write_texts(dir.path(), Format::Parquet, &[&record]);
    assert_eq!(
        parquet_column(dir.path(), "additionalDetails"),
        vec![Some(r#"{"n":12345678901234567890123,"e":1E+2,"z":-0,"k":1,"k":2,"s":"a b"}"#.to_string())]
    );
    // NDJSON keeps the whole record's text.
    let dir = tempfile::tempdir().unwrap();
    write_texts(dir.path(), Format::Ndjson, &[&record]);
    let line = std::fs::read_to_string(&crate::common::data_files(dir.path())[0]).unwrap();
    assert!(line.contains(sent), "{line}");
}
