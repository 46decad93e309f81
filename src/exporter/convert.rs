//! `convert`: a Parquet-folder lake this program wrote becomes a Delta table in place, its files
//! neither rewritten nor moved.
//!
//! Exactly once: the table's first version (protocol, schema and an add for every file) is one
//! conditional put, so a table exists with every file the lake held, or there is none; a crash
//! before it leaves the folder as it was. What goes in is what the lake holds: the files the
//! manifest lists after adopting the output (a lost or older state learns it first), each
//! checked as recorded (size, rows, columns from its footer) before anything is written.

use futures::TryStreamExt;

use super::Exporter;
use crate::store::delta::AddFile;
use crate::window::ExportError;

/// Footer reads in flight at once (object storage: one ranged GET each).
const FOOTERS_AT_ONCE: usize = 16;
/// The tail read first: our footers fit in it, a larger one costs a second read.
const TAIL_BYTES: u64 = 64 << 10;

/// What a conversion did.
#[derive(Debug, Default, Clone)]
pub struct Converted {
    /// Files added to the table.
    pub files: u64,
    /// Their rows.
    pub rows: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files in `dt=` folders that this program did not write: not in the table.
    pub left_out: Vec<String>,
}

impl Exporter {
    /// Makes the folder lake at the output root a Delta table (see the module doc). The exporter
    /// must have been opened in folder mode.
    pub async fn convert(&self) -> Result<Converted, ExportError> {
        if self.table.is_some() || self.settings.export.sink.format != crate::sink::Format::Parquet {
            return Err(ExportError::Internal("convert needs a Parquet folder lake".into()));
        }
        // Every file of this program in the output, learned into the manifest (a state that
        // missed some learns them here, as at a run's start).
        self.checkpoint.set_file_adoption_pending(true)?;
        self.adopt_lake().await?;
        let listed: std::collections::HashMap<String, u64> = self.store.data_files().await?.into_iter().collect();
        let manifest: Vec<_> = self
            .checkpoint
            .files()?
            .into_iter()
            .filter(|f| !crate::model::is_quarantine(&f.partition))
            .collect();
        let columns = crate::sink::parquet::schema();
        let mut adds = Vec::with_capacity(manifest.len());
        for f in &manifest {
            let bad = |message: String| ExportError::NotConvertible {
                path: f.path.clone(),
                message,
            };
            match listed.get(&f.path) {
                Some(&size) if size == f.bytes => {}
                Some(&size) => return Err(bad(format!("the manifest records {} bytes, the output holds {size}", f.bytes))),
                None => return Err(bad("the manifest lists it, the output does not hold it".into())),
            }
            if !f.path.ends_with(".parquet") {
                return Err(bad("not a Parquet file (a Delta table holds Parquet only)".into()));
            }
            adds.push(AddFile {
                path: f.path.clone(),
                size: f.bytes,
                rows: f.rows,
            });
        }
        // Every file's footer: its rows as recorded, and the table's columns (a reader of the
        // table would fail on a file of other columns).
        futures::stream::iter(adds.iter().map(Ok::<_, ExportError>))
            .try_for_each_concurrent(FOOTERS_AT_ONCE, |a| {
                let columns = columns.clone();
                async move {
                    let bad = |message: String| ExportError::NotConvertible {
                        path: a.path.clone(),
                        message,
                    };
                    let mut tail = self.store.read_tail(&a.path, a.size, TAIL_BYTES).await?;
                    let footer = match crate::sink::readback::parquet_footer(&a.path, &tail) {
                        Ok(Err(need)) if need <= a.size => {
                            tail = self.store.read_tail(&a.path, a.size, need).await?;
                            crate::sink::readback::parquet_footer(&a.path, &tail)
                        }
                        other => other,
                    };
                    let footer = match footer {
                        Ok(Ok(f)) => f,
                        Ok(Err(_)) => return Err(bad("its footer is larger than the file: not a Parquet file".into())),
                        Err(e) => return Err(bad(format!("its footer cannot be read: {}", e.message))),
                    };
                    if footer.rows != a.rows {
                        return Err(bad(format!("the manifest records {} rows, the file holds {}", a.rows, footer.rows)));
                    }
                    let same = footer.schema.fields().len() == columns.fields().len()
                        && footer
                            .schema
                            .fields()
                            .iter()
                            .zip(columns.fields())
                            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type() && x.is_nullable() == y.is_nullable());
                    if !same {
                        return Err(bad(format!(
                            "its columns differ from the table's ({:?})",
                            footer.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>()
                        )));
                    }
                    Ok(())
                }
            })
            .await?;
        let known: std::collections::HashSet<&str> = manifest.iter().map(|f| f.path.as_str()).collect();
        let mut left_out: Vec<String> = listed
            .keys()
            .filter(|p| !p.starts_with(crate::model::QUARANTINE_DIR) && !known.contains(p.as_str()))
            .cloned()
            .collect();
        left_out.sort();
        let table = self.store.delta_table()?;
        crate::crashpoint::hit("convert");
        if !table.create_with(&columns, &adds).await? {
            return Err(ExportError::FormatSwitch {
                existing: "delta (created while converting)".into(),
                configured: "parquet".into(),
            });
        }
        for f in &left_out {
            tracing::warn!(file = %f, "a file in the output that this program did not write is not in the table");
        }
        Ok(Converted {
            files: adds.len() as u64,
            rows: adds.iter().map(|a| a.rows).sum(),
            bytes: adds.iter().map(|a| a.size).sum(),
            left_out,
        })
    }
}
