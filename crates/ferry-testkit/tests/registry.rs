//! Checks the Registry lifecycle: start, parallel starts, stop keeping the tree, drop cleaning up.

use std::path::PathBuf;
use std::time::Duration;

use ferry_testkit::{Pusher, Registry, RegistryConfig, tree};

#[test]
fn start_serves_v2_and_writes_config_and_log() {
    let reg = Registry::start().unwrap();
    assert!(reg.host().starts_with("127.0.0.1:"));
    assert_eq!(reg.url(), format!("http://{}", reg.host()));
    assert!(reg.log_path().is_file());
    let config = reg.storage_root().parent().unwrap().join("config.yml");
    let yaml = std::fs::read_to_string(config).unwrap();
    assert!(yaml.contains(&format!(
        "rootdirectory: '{}'",
        reg.storage_root().display()
    )));
    assert!(yaml.contains("- '^https?://'"));
    let p = Pusher::new(&reg);
    assert!(p.catalog().unwrap().is_empty());
}

#[test]
fn stop_keeps_the_tree_and_drop_removes_it() {
    let reg = Registry::start().unwrap();
    let tmp: PathBuf = reg.storage_root().parent().unwrap().to_path_buf();
    let p = Pusher::new(&reg);
    let d = p.push_blob("some/repo", b"hello").unwrap();
    let pid = reg.pid().unwrap();
    let stopped = reg.stop().unwrap();
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "registry process is gone"
    );
    assert_eq!(
        std::fs::read_to_string(tree::layer_link(stopped.root(), "some/repo", &d.digest)).unwrap(),
        d.digest
    );
    assert_eq!(
        std::fs::read(tree::blob_data(stopped.root(), &d.digest)).unwrap(),
        b"hello"
    );
    let kept = stopped.into_temp_dir();
    assert!(kept.path().join("storage/docker/registry/v2").is_dir());
    drop(kept);
    assert!(!tmp.exists());

    let reg = Registry::start().unwrap();
    let tmp = reg.storage_root().parent().unwrap().to_path_buf();
    let pid = reg.pid().unwrap();
    drop(reg);
    assert!(!PathBuf::from(format!("/proc/{pid}")).exists());
    assert!(!tmp.exists());
}

#[test]
fn many_registries_start_in_parallel() {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let reg = Registry::start().unwrap();
                let p = Pusher::new(&reg);
                let repo = format!("r{i}");
                p.push_blob(&repo, format!("blob {i}").as_bytes()).unwrap();
                // Each registry serves only what was pushed to it.
                assert_eq!(p.catalog().unwrap(), vec![repo]);
                reg.port()
            })
        })
        .collect();
    let mut ports: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 8);
}

#[test]
fn failed_start_reports_the_log_tail() {
    // `/bin/sh serve config.yml` fails at once, writing a complaint to the log.
    let err = Registry::start_with(RegistryConfig {
        binary: PathBuf::from("/bin/sh"),
        start_attempts: 2,
        startup_timeout: Duration::from_secs(2),
        ..RegistryConfig::default()
    })
    .err()
    .expect("start fails");
    let text = format!("{err:#}");
    assert!(text.contains("after 2 attempts"), "{text}");
    assert!(text.contains("exited early"), "{text}");
    assert!(text.contains("serve"), "log tail is included: {text}");
}
