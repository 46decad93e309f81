//! Reading published files back: row counts (for `verify`) and the `_record_id` of every row
//! (to rebuild dedup keys from the lake itself). The file's format is known from its name,
//! which this module's sibling writers chose.

use std::io::Read;

use arrow::array::{Array, StringArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::FileReader;

use crate::model::{RecordId, id_from_hex};

/// A published file that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReadbackError {
    /// Path relative to the output root.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &str, message: impl ToString) -> ReadbackError {
    ReadbackError {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// The uncompressed NDJSON text of a file named `*.ndjson[.gz|.zst]`.
fn ndjson_text(path: &str, data: Vec<u8>) -> Result<Vec<u8>, ReadbackError> {
    let mut text = Vec::new();
    if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(data.as_slice())
            .read_to_end(&mut text)
            .map_err(|e| err(path, e))?;
    } else if path.ends_with(".zst") {
        zstd::stream::read::Decoder::new(data.as_slice())
            .and_then(|mut d| d.read_to_end(&mut text))
            .map_err(|e| err(path, e))?;
    } else {
        text = data;
    }
    Ok(text)
}

/// Rows in a published file, counted from its bytes.
pub fn count_rows(path: &str, data: Vec<u8>) -> Result<u64, ReadbackError> {
    if path.ends_with(".parquet") {
        let r = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(data)).map_err(|e| err(path, e))?;
        return Ok(r.metadata().file_metadata().num_rows() as u64);
    }
    let text = ndjson_text(path, data)?;
    Ok(text.iter().filter(|b| **b == b'\n').count() as u64)
}

/// What a Parquet file's footer says.
#[derive(Debug, Clone)]
pub struct Footer {
    /// Rows in the file.
    pub rows: u64,
    /// Its columns, as Arrow reads them.
    pub schema: arrow::datatypes::Schema,
}

/// Parses a Parquet file's footer from its last bytes `tail`: `Ok(Err(n))` when the footer needs
/// the file's last `n` bytes and `tail` holds fewer.
pub fn parquet_footer(path: &str, tail: &[u8]) -> Result<Result<Footer, u64>, ReadbackError> {
    use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    let Some(last) = tail.len().checked_sub(8).map(|at| &tail[at..]) else {
        return Err(err(path, "too short to be a Parquet file"));
    };
    let ft = FooterTail::try_from(last).map_err(|e| err(path, e))?;
    let need = ft.metadata_length() + 8;
    if tail.len() < need {
        return Ok(Err(need as u64));
    }
    let meta = ParquetMetaDataReader::decode_metadata(&tail[tail.len() - need..tail.len() - 8]).map_err(|e| err(path, e))?;
    let fm = meta.file_metadata();
    let schema = parquet::arrow::parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata()).map_err(|e| err(path, e))?;
    Ok(Ok(Footer {
        rows: fm.num_rows().max(0) as u64,
        schema,
    }))
}

/// Where a published file's bytes come from: a local file is read in place (Parquet: only the
/// `_record_id` column chunks; NDJSON: line by line), object-store bytes are in memory.
pub enum Source {
    /// A local file.
    File(std::fs::File),
    /// Bytes already fetched.
    Bytes(Vec<u8>),
}

/// Every row's `_record_id`, in file order.
pub fn record_ids(path: &str, data: Vec<u8>) -> Result<Vec<RecordId>, ReadbackError> {
    record_ids_from(path, Source::Bytes(data))
}

/// Every row's `_record_id`, in file order, reading no more of `source` than needed.
pub fn record_ids_from(path: &str, source: Source) -> Result<Vec<RecordId>, ReadbackError> {
    if path.ends_with(".parquet") {
        return match source {
            Source::File(f) => parquet_ids(path, f),
            Source::Bytes(b) => parquet_ids(path, bytes::Bytes::from(b)),
        };
    }
    let reader: Box<dyn Read> = match source {
        Source::File(f) => Box::new(f),
        Source::Bytes(b) => Box::new(std::io::Cursor::new(b)),
    };
    let reader: Box<dyn Read> = if path.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else if path.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(reader).map_err(|e| err(path, e))?)
    } else {
        reader
    };
    let mut out = Vec::new();
    let mut lines = std::io::BufReader::with_capacity(1 << 16, reader);
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        if std::io::BufRead::read_until(&mut lines, b'\n', &mut line).map_err(|e| err(path, e))? == 0 {
            break;
        }
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        #[derive(serde::Deserialize)]
        struct Row<'a> {
            #[serde(borrow, rename = "_record_id")]
            id: &'a str,
        }
        let row: Row<'_> = serde_json::from_slice(&line).map_err(|e| err(path, format!("line {n}: {e}")))?;
        out.push(id_from_hex(row.id).ok_or_else(|| err(path, format!("line {n}: bad _record_id")))?);
    }
    Ok(out)
}

fn parquet_ids<R: parquet::file::reader::ChunkReader + 'static>(path: &str, data: R) -> Result<Vec<RecordId>, ReadbackError> {
    let mut out = Vec::new();
    {
        let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| err(path, e))?;
        let schema = builder.parquet_schema();
        let idx = (0..schema.num_columns())
            .find(|i| schema.column(*i).name() == "_record_id")
            .ok_or_else(|| err(path, "no _record_id column"))?;
        let mask = ProjectionMask::leaves(schema, [idx]);
        let reader = builder.with_projection(mask).build().map_err(|e| err(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| err(path, e))?;
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| err(path, "_record_id is not a string column"))?;
            for i in 0..col.len() {
                out.push(id_from_hex(col.value(i)).ok_or_else(|| err(path, format!("bad _record_id in row {i}")))?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_footer_is_read_from_the_tail_or_asks_for_more() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let mut file = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut file, schema.clone(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        // Eight bytes name the footer's length, and ask for it.
        let need = match parquet_footer("f.parquet", &file[file.len() - 8..]).unwrap() {
            Err(n) => n as usize,
            Ok(_) => panic!("a footer cannot fit in eight bytes"),
        };
        assert!(need > 8 && need < file.len());
        let f = parquet_footer("f.parquet", &file[file.len() - need..]).unwrap().unwrap();
        assert_eq!(f.rows, 3);
        assert_eq!(f.schema.fields().len(), 1);
        assert_eq!(f.schema.field(0).name(), "n");
        assert!(parquet_footer("f.parquet", b"not parquet at all").is_err());
        assert!(parquet_footer("f.parquet", b"PAR1").is_err());
    }
}
