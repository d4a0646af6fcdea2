//! The downloader, against a tiny HTTP server on 127.0.0.1 and file:// sources. No test
//! touches the internet.

use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tapegrad_data::{
    fetch_archive, load_cifar, write_synthetic_cifar, Archive, CifarKind, DataError, LabelKind, Split,
};

/// A .tar.gz of a synthetic dataset in the official layout (`per_file` records per
/// file), with `skip` left out of it; returns the bytes and their MD5.
fn make_archive(kind: CifarKind, per_file: usize, skip: Option<&str>) -> (Vec<u8>, String) {
    let src = tempfile::tempdir().unwrap();
    let folder = write_synthetic_cifar(src.path(), kind, per_file, 5).unwrap();
    if let Some(name) = skip {
        std::fs::remove_file(folder.join(name)).unwrap();
    }
    std::fs::write(folder.join("readme.txt"), "extra files are fine").unwrap();
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    tar.append_dir_all(kind.folder(), &folder).unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let md5 = format!("{:x}", md5::compute(&bytes));
    (bytes, md5)
}

/// Serves `body` with `status` to at most `max_requests` requests on 127.0.0.1, for at
/// most 10 seconds; `declared` overrides the Content-Length (to simulate a cut
/// connection). Returns the URL and the thread, which yields the number of requests served.
fn serve(
    body: Vec<u8>,
    status: &'static str,
    declared: Option<usize>,
    max_requests: usize,
) -> (String, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/archive.tar.gz", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline {
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("accept: {e}"),
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let len = declared.unwrap_or(body.len());
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
            served += 1;
        }
        served
    });
    (url, handle)
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn download_from_local_server_succeeds_and_is_cached() {
    let (bytes, md5) = make_archive(CifarKind::Cifar10, 2, None);
    let (url, server) = serve(bytes, "200 OK", None, 1);
    let cache = tempfile::tempdir().unwrap();
    let archive = Archive { kind: CifarKind::Cifar10, url, md5: md5.to_uppercase() };
    let folder = fetch_archive(&archive, cache.path(), false).unwrap();
    assert_eq!(folder, cache.path().join("cifar-10-batches-bin"));
    assert_eq!(entries(cache.path()), ["cifar-10-batches-bin"], "no temporary file is left");
    assert_eq!(server.join().unwrap(), 1);

    let train = load_cifar(cache.path(), CifarKind::Cifar10, Split::Train, LabelKind::Fine).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(load_cifar(cache.path(), CifarKind::Cifar10, Split::Test, LabelKind::Fine).unwrap().len(), 2);

    // Complete now: a second call contacts nothing (the server has stopped).
    assert_eq!(fetch_archive(&archive, cache.path(), false).unwrap(), folder);
}

#[test]
fn download_from_file_url_succeeds() {
    let (bytes, md5) = make_archive(CifarKind::Cifar100, 3, None);
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("cifar-100-binary.tar.gz");
    std::fs::write(&path, bytes).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let nested = cache.path().join("a/b");
    let archive = Archive { kind: CifarKind::Cifar100, url: format!("file://{}", path.display()), md5 };
    let folder = fetch_archive(&archive, &nested, false).unwrap();
    let data = load_cifar(&nested, CifarKind::Cifar100, Split::Train, LabelKind::Coarse).unwrap();
    assert_eq!((data.len(), data.num_classes()), (3, 20));
    // The verified archive's files are recorded in the manifest, which loading checks.
    let manifest = std::fs::read_to_string(folder.join(tapegrad_data::MANIFEST_FILE)).unwrap();
    assert!(manifest.contains("  train.bin\n") && manifest.contains("  test.bin\n"), "{manifest}");
    let train = folder.join("train.bin");
    let mut bytes = std::fs::read(&train).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&train, bytes).unwrap();
    let err = load_cifar(&nested, CifarKind::Cifar100, Split::Train, LabelKind::Coarse).unwrap_err();
    assert!(err.to_string().contains("MD5"), "{err}");
}

#[test]
fn md5_mismatch_is_an_error_and_leaves_nothing() {
    let (bytes, _) = make_archive(CifarKind::Cifar10, 1, None);
    let (url, server) = serve(bytes, "200 OK", None, 1);
    let cache = tempfile::tempdir().unwrap();
    let archive =
        Archive { kind: CifarKind::Cifar10, url: url.clone(), md5: "0123456789abcdef0123456789abcdef".into() };
    let err = fetch_archive(&archive, cache.path(), false).unwrap_err();
    assert!(matches!(err, DataError::Md5Mismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("0123456789abcdef0123456789abcdef"), "{msg}");
    assert_eq!(entries(cache.path()), Vec::<String>::new(), "nothing may look complete");
    assert!(load_cifar(cache.path(), CifarKind::Cifar10, Split::Test, LabelKind::Fine).is_err());
    server.join().unwrap();
}

#[test]
fn interrupted_download_is_an_error_and_leaves_nothing() {
    let (bytes, md5) = make_archive(CifarKind::Cifar10, 1, None);
    let declared = bytes.len() + 1000;
    let (url, server) = serve(bytes, "200 OK", Some(declared), 1);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_archive(&Archive { kind: CifarKind::Cifar10, url, md5 }, cache.path(), false).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err:?}");
    assert_eq!(entries(cache.path()), Vec::<String>::new());
    server.join().unwrap();
}

#[test]
fn offline_error_says_how_to_install_by_hand() {
    // A port nothing listens on: connection refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/cifar-100-binary.tar.gz");
    let cache = tempfile::tempdir().unwrap();
    let archive = Archive { url: url.clone(), ..Archive::official(CifarKind::Cifar100) };
    let err = fetch_archive(&archive, cache.path(), false).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [
        url.as_str(),
        "03b5dce01913d631647c71ecec9e9cb8",
        &cache.path().display().to_string(),
        &cache.path().join("cifar-100-binary").display().to_string(),
        "train.bin",
        "test.bin",
        "by hand",
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    assert_eq!(entries(cache.path()), Vec::<String>::new());
}

#[test]
fn http_error_status_is_a_download_error() {
    let (url, server) = serve(b"not here".to_vec(), "404 Not Found", None, 1);
    let cache = tempfile::tempdir().unwrap();
    let archive = Archive { url, ..Archive::official(CifarKind::Cifar10) };
    let err = fetch_archive(&archive, cache.path(), false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("404") && msg.contains("by hand"), "{msg}");
    assert_eq!(entries(cache.path()), Vec::<String>::new());
    server.join().unwrap();
}

#[test]
fn archive_without_the_expected_files_is_rejected() {
    let (bytes, md5) = make_archive(CifarKind::Cifar10, 1, Some("data_batch_4.bin"));
    let (url, server) = serve(bytes, "200 OK", None, 1);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch_archive(&Archive { kind: CifarKind::Cifar10, url, md5 }, cache.path(), false).unwrap_err();
    assert!(matches!(err, DataError::BadArchive { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_4.bin"), "{err}");
    assert_eq!(entries(cache.path()), Vec::<String>::new());
    server.join().unwrap();
}

#[test]
fn incomplete_existing_folder_is_reported() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("cifar-100-binary")).unwrap();
    std::fs::write(cache.path().join("cifar-100-binary/train.bin"), b"").unwrap();
    let archive = Archive { url: "http://127.0.0.1:9/unused".into(), ..Archive::official(CifarKind::Cifar100) };
    let err = fetch_archive(&archive, cache.path(), false).unwrap_err();
    assert!(matches!(err, DataError::IncompleteDir { .. }), "{err:?}");
    assert!(err.to_string().contains("test.bin"), "{err}");
}

#[test]
fn official_archives_are_the_published_ones() {
    let a = Archive::official(CifarKind::Cifar100);
    assert_eq!(a.url, "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz");
    assert_eq!(a.md5, "03b5dce01913d631647c71ecec9e9cb8");
    let a = Archive::official(CifarKind::Cifar10);
    assert_eq!(a.url, "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz");
    assert_eq!(a.md5, "c32a1d4ab5d03f1284b67883e8d87530");
}
