//! The object-storage path of the store (put, list, delete, get) through `object_store`'s
//! in-memory backend, driven in process: export, read back, recover an uncommitted attempt.

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn export_to_object_storage_and_recover() {
    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    let mut raw = aos_audit_export::config::load(Some(&s.config), &[("export.output", "memory://".to_string())]).unwrap();
    raw.export.format = "parquet".into();
    let ex = aos_audit_export::exporter::Exporter::new(raw.validate(chrono::Utc::now()).unwrap())
        .await
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (from, to) = range(3);
    ex.backfill(from, to, chrono::Utc::now(), &cancel).await.unwrap();
    assert!(!s.out().exists(), "nothing written locally");
    // Read every manifest file back from the store into a local mirror, then compare.
    let mirror = s.dir.path().join("mirror");
    let files = ex.checkpoint().files().unwrap();
    assert!(!files.is_empty());
    for f in &files {
        let data = ex.store().read(&f.path).await.unwrap();
        assert_eq!(data.len() as u64, f.bytes);
        let p = mirror.join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    assert_same_multiset(&read_all(&mirror), &emu.ground_truth(from, to));
    // Nothing stays in the upload spool.
    let spool = s.state().with_extension("spool");
    assert!(std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) == 0, "spool emptied");

    // An attempt that published but never committed is deleted by recovery.
    let stray = "dt=2024-03-02/all-20240302T000000Z-20240303T000000Z-g1-p000.parquet";
    let staged = s.dir.path().join("stray");
    std::fs::write(&staged, b"uncommitted").unwrap();
    ex.store().publish(&staged, stray).await.unwrap();
    ex.checkpoint()
        .begin_attempt(
            "all",
            "all-20240302T000000Z-20240303T000000Z-g1",
            &["dt=2024-03-02".into(), "dt=unknown".into()],
        )
        .unwrap();
    assert!(ex.store().read(stray).await.is_ok());
    ex.recover().await.unwrap();
    assert!(ex.store().read(stray).await.is_err(), "uncommitted file removed");
    assert!(ex.checkpoint().pending().unwrap().is_empty());
    for f in &files {
        assert!(ex.store().read(&f.path).await.is_ok(), "committed files untouched: {}", f.path);
    }
}
