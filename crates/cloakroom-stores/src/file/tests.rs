//! Unit tests of the file store's purge.

use cloakroom::{Policy, SessionId};

use super::*;

const T0: u64 = 1_700_000_000;

fn expired_record() -> Record {
    Record::new(
        SessionId::generate().unwrap().hash(),
        T0,
        &Policy::default(),
    )
}

/// A purge run of many small batches scans the directory once to find the candidates (and
/// once more to find nothing left), not once per batch.
#[test]
fn a_purge_in_batches_scans_the_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Inner::open(dir.path().join("store")).unwrap();
    for _ in 0..50 {
        let record = expired_record();
        inner.create(&record, record.last_seen).unwrap();
    }
    let later = T0 + 13 * 3600;
    let mut total = 0;
    let mut batches = 0;
    loop {
        let n = inner.purge_expired(later, 7).unwrap();
        batches += 1;
        total += n;
        if n < 7 {
            break;
        }
    }
    assert_eq!(total, 50);
    assert!(batches >= 8, "{batches}");
    assert_eq!(inner.scans.load(Ordering::Relaxed), 2);
    assert_eq!(fs::read_dir(&inner.sessions).unwrap().count(), 0);
}

/// A writer's leftover temporary file is judged by the `now` the caller passes, not by a
/// clock the store reads.
#[test]
fn stale_temporary_files_are_judged_by_the_given_now() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Inner::open(dir.path().join("store")).unwrap();
    let temp = inner.sessions.join(".tmp.leftover");
    fs::write(&temp, b"half a record").unwrap();
    let written = u64::try_from(fs::metadata(&temp).unwrap().ctime()).unwrap();
    // Just written, as the caller's clock sees it: kept.
    inner.purge_expired(written + 60, 10).unwrap();
    assert!(temp.exists());
    // Two hours later by the caller's clock: removed (the machine's clock says seconds).
    inner.purge_expired(written + 2 * 3600, 10).unwrap();
    assert!(!temp.exists());
}
