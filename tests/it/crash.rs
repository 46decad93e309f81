//! Exactly-once under crashes and failures: SIGKILL at random moments, look-back overlaps,
//! an unwritable output, and `verify`.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::*;

/// Kills a backfill (SIGKILL, real child process) at random moments at least `kills` times,
/// then lets it finish; the output must equal the ground truth as a multiset.
async fn kill_and_finish(export_extra: &str, days: u32, seed: u64) {
    let mut cfg = emu_config(days, 300);
    cfg.page_size = 30;
    cfg.latency = Duration::from_millis(25);
    let emu = start(cfg).await;
    let s = setup(&emu, &format!("concurrency = 2\n{export_extra}"));
    let to = format!("2024-03-{:02}", 1 + days);
    let args = ["backfill", "--from", "2024-03-01", "--to", to.as_str()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    while kills < 20 {
        let mut child = spawn(&s, &args);
        let delay = Duration::from_millis(rng.random_range(20..250));
        tokio::select! {
            status = child.wait() => {
                let status = status.unwrap();
                assert!(status.success(), "a run between kills failed: {status:?}");
                panic!("the backfill finished after only {kills} kills; make the workload larger");
            }
            _ = tokio::time::sleep(delay) => {
                child.kill().await.unwrap();
                kills += 1;
            }
        }
    }
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", &to], &[]).await;
    assert_ok(&o);
    let (from, to) = range(days as i64);
    let truth = emu.ground_truth(from, to);
    let rows = read_all(&s.out());
    assert!(twin_records(&truth) > 0);
    assert_same_multiset(&rows, &truth);
    assert_output_consistent(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_backfill_parquet() {
    kill_and_finish("", 30, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_backfill_ndjson() {
    kill_and_finish("format = \"ndjson\"", 30, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_lookback_rereads_add_no_duplicates() {
    let emu = start(emu_config(4, 300)).await;
    let s = setup(&emu, "window = \"6h\"\nlookback = \"1d\"");
    let mut rereads = 0;
    for now in [
        "2024-03-01T13:00:00Z",
        "2024-03-02T00:00:00Z",
        "2024-03-02T07:30:00Z",
        "2024-03-03T12:00:00Z",
        "2024-03-05T00:00:00Z",
    ] {
        let o = cli(&s, &["--now", now, "run"], &[]).await;
        assert_ok(&o);
        let out = stdout(&o);
        let n: u64 = out.split(" fetched, ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        rereads += n;
    }
    assert!(rereads > 500, "the look-back re-read records ({rereads})");
    let (from, to) = range(4);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

#[tokio::test(flavor = "multi_thread")]
async fn unwritable_partition_fails_cleanly_and_resumes() {
    let emu = start(emu_config(5, 200)).await;
    let s = setup(&emu, "concurrency = 3");
    std::fs::create_dir_all(s.out()).unwrap();
    // A file where the partition folder must go: every write into it fails (as on a full or
    // read-only disk), while the days before it succeed.
    let obstacle = s.out().join("dt=2024-03-03");
    std::fs::write(&obstacle, b"not a folder").unwrap();
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-06"], &[]).await;
    assert_eq!(o.status.code(), Some(5), "output errors exit 5: {}", stderr(&o));
    let err = stderr(&o);
    let last = err.trim_end().lines().last().unwrap();
    assert!(last.starts_with("error: ") && last.contains("dt=2024-03-03"), "{err}");
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(
        st["streams"][0]["watermark"], "2024-03-03T00:00:00Z",
        "checkpoint stops before the failed window"
    );
    assert_eq!(st["pending_attempts"], 0, "uncommitted later windows were cleaned up");
    let parts: Vec<String> = data_files(&s.out())
        .iter()
        .map(|p| p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        parts.iter().all(|p| p == "dt=2024-03-01" || p == "dt=2024-03-02"),
        "only committed windows are visible: {parts:?}"
    );
    assert!(staging_files(&s.out()).is_empty());
    std::fs::remove_file(&obstacle).unwrap();
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-06"], &[]).await);
    let (from, to) = range(5);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_detects_a_changed_file_and_status_lists_partitions() {
    let emu = start(emu_config(2, 200)).await;
    let s = setup(&emu, "");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    let st = stdout(&cli(&s, &["status"], &[]).await);
    assert!(st.contains("dt=2024-03-01") && st.contains("dt=2024-03-02"), "{st}");
    let rows_day1 = read_all(&s.out()).iter().filter(|r| r.partition == "dt=2024-03-01").count();
    assert!(
        st.lines()
            .any(|l| l.contains("dt=2024-03-01") && l.contains(&format!("rows {rows_day1:>10}"))),
        "{st}"
    );
    assert_ok(&cli(&s, &["verify"], &[]).await);
    let f = &data_files(&s.out())[0];
    let mut bytes = std::fs::read(f).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(f, bytes).unwrap();
    let v = cli(&s, &["verify"], &[]).await;
    assert_eq!(v.status.code(), Some(7));
    assert!(stdout(&v).contains("MISMATCH") && stdout(&v).contains(&f.file_name().unwrap().to_string_lossy().into_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_at_a_consistent_checkpoint() {
    let mut cfg = emu_config(10, 200);
    cfg.page_size = 50;
    cfg.latency = Duration::from_millis(40);
    let emu = start(cfg).await;
    let s = setup(&emu, "concurrency = 2");
    let child = spawn(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"]);
    while emu.audit_requests() < 12 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigterm(&child);
    let out = child.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(st["runs"][0]["status"], "interrupted");
    assert_eq!(st["pending_attempts"], 0, "the interrupted windows left nothing behind");
    assert!(staging_files(&s.out()).is_empty());
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"], &[]).await);
    let (from, to) = range(10);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

/// Unmounts the tmpfs when the test ends, whatever happens.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_fails_cleanly_and_resumes() {
    let emu = start(emu_config(5, 400)).await;
    let s = setup(&emu, "concurrency = 1\nformat = \"ndjson\"");
    std::fs::create_dir_all(s.out()).unwrap();
    // A real full disk: the output on a tmpfs that holds about two days of NDJSON.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=700k", "tmpfs"])
        .arg(s.out())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        assert!(
            std::env::var("AOS_TEST_REQUIRE_TMPFS").is_err(),
            "mounting a tmpfs (root) is required here"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    }
    let _guard = Mount(s.out());
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-06"], &[]).await;
    assert_eq!(o.status.code(), Some(5), "output errors exit 5: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.trim_end().lines().last().unwrap().contains("No space left on device"), "{err}");
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    let wm = st["streams"][0]["watermark"]
        .as_str()
        .expect("some windows committed before the disk filled");
    assert!(wm < "2024-03-06", "checkpoint stops before the failed window: {wm}");
    assert_eq!(st["pending_attempts"], 0);
    // Every visible file is complete and in the manifest.
    assert_output_consistent(&s).await;
    // Free space, resume: exactly the ground truth.
    assert!(
        std::process::Command::new("mount")
            .args(["-o", "remount,size=20m"])
            .arg(s.out())
            .status()
            .unwrap()
            .success()
    );
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-06"], &[]).await);
    let (from, to) = range(5);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}
