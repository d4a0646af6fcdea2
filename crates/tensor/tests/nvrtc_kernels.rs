//! CI gate for the CUDA kernels that needs no GPU: every kernel source compiles with
//! NVRTC (PTX for compute_80 and compute_90, and a CUBIN for sm_90, which also runs
//! ptxas), and the kernel names the launch code asks for are exactly the entry points in
//! the sources.
//!
//! Needs libnvrtc on the library path: `scripts/nvrtc-check.sh -- cargo test -p
//! tapegrad-tensor --features cuda --test nvrtc_kernels` installs it from PyPI. Without
//! it the tests print `SKIPPED ...` and pass, unless `REQUIRE_NVRTC=1` (which the script
//! sets) makes that a failure.
#![cfg(feature = "cuda")]

use std::collections::BTreeSet;
use tapegrad_tensor::cuda::{all_kernel_names, compile_kernel, nvrtc_version, KernelSource, ALL_SOURCES};

/// Whether NVRTC can be used; prints why not, or panics under `REQUIRE_NVRTC=1`.
fn nvrtc_or_skip(test: &str) -> bool {
    match nvrtc_version() {
        Ok((major, minor)) => {
            eprintln!("{test}: NVRTC {major}.{minor}");
            true
        }
        Err(e) if std::env::var("REQUIRE_NVRTC").as_deref() == Ok("1") => panic!("{test}: REQUIRE_NVRTC=1 but {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
    }
}

/// The `.entry` names in a PTX module.
fn ptx_entries(ptx: &str) -> BTreeSet<String> {
    ptx.lines()
        .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
        .map(|rest| rest.split('(').next().unwrap_or(rest).trim().to_string())
        .collect()
}

#[test]
fn every_kernel_source_compiles() {
    if !nvrtc_or_skip("every_kernel_source_compiles") {
        return;
    }
    let mut failures = Vec::new();
    let mut ptx_by_source = Vec::new();
    for source in ALL_SOURCES {
        for arch in ["compute_80", "compute_90", "sm_90"] {
            match compile_kernel(source, arch) {
                Ok(image) if image.len() > 16 => {
                    if arch == "compute_80" {
                        ptx_by_source.push((source.name, String::from_utf8_lossy(&image).into_owned()));
                    }
                }
                Ok(image) => failures.push(format!("{}.cu for {arch}: only {} bytes", source.name, image.len())),
                Err(e) => failures.push(format!("{}.cu for {arch}: {e}", source.name)),
            }
        }
    }
    assert!(failures.is_empty(), "NVRTC failed:\n{}", failures.join("\n\n"));

    // The launch code's names and the sources' entry points must match both ways: a
    // misspelt name would only fail on a GPU, an entry nobody launches is dead code.
    let launched = all_kernel_names();
    for (source, ptx) in &ptx_by_source {
        let entries = ptx_entries(ptx);
        let wanted: BTreeSet<String> = launched.iter().filter(|(s, _)| s == source).map(|(_, n)| n.clone()).collect();
        let missing: Vec<_> = wanted.difference(&entries).collect();
        let unused: Vec<_> = entries.difference(&wanted).collect();
        assert!(missing.is_empty(), "{source}.cu lacks kernels the launch code uses: {missing:?}");
        assert!(unused.is_empty(), "{source}.cu has kernels nothing launches: {unused:?}");
    }
}

#[test]
fn a_compile_error_reports_the_nvrtc_log() {
    if !nvrtc_or_skip("a_compile_error_reports_the_nvrtc_log") {
        return;
    }
    let broken = KernelSource {
        name: "broken",
        source: "extern \"C\" __global__ void broken(float* x) { x[0] = undeclared_thing; }",
    };
    let err = compile_kernel(&broken, "compute_80").expect_err("the source does not compile").to_string();
    assert!(err.contains("undeclared_thing") && err.contains("broken.cu"), "{err}");
}
