//! `deploy/kubernetes/`: the manifests pass a Kubernetes schema validator (`kubernetes-validate`,
//! PyPI), and their pods' command lines, run as processes, push and validate a real tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_testkit::{Registry, RegistryAuth, RegistryConfig};
use serde_json::Value;

use crate::util::*;

/// Kubernetes versions the manifests are checked against: 1.29 is the first where
/// `backoffLimitPerIndex` is on by default (beta), 1.33 where it is GA, 1.37 the newest the
/// validator knows.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.29.0", "1.33.0", "1.37.0"];

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        2,
        "push and validate Jobs in {}",
        dir.display()
    );
    files
}

/// `kubernetes-validate --strict` (unknown fields are errors) of `files` at `version`.
fn validate(version: &str, files: &[PathBuf]) -> Ran {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate: {e} (scripts/test.sh installs it: pip install kubernetes-validate)")
        });
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn kubernetes_manifests_pass_the_schema_validator_and_a_broken_one_does_not() {
    let files = manifests();
    for version in KUBERNETES_VERSIONS {
        let ran = validate(version, &files);
        assert_eq!(ran.code, 0, "Kubernetes {version}: {}", ran.all());
        assert_eq!(ran.all().matches("passed").count(), 2, "{}", ran.all());
    }
    // The validator does reject what Kubernetes would: a misspelt field, a wrong type.
    let push = std::fs::read_to_string(&files[0]).unwrap(); // push-job.yaml
    let dir = workdir();
    for (from, to) in [
        ("backoffLimitPerIndex: 2", "backoffLimitPerIndx: 2"),
        ("completions: 4", "completions: four"),
        ("readOnly: true", "readOnly: yes-please"),
    ] {
        assert!(push.contains(from), "{from}");
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, push.replacen(from, to, 1)).unwrap();
        let ran = validate(KUBERNETES_VERSIONS[0], &[broken]);
        assert_ne!(ran.code, 0, "{to} accepted: {}", ran.all());
    }
}

fn load(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The one container of a Job, with its args.
fn container(job: &Value) -> (&Value, Vec<String>) {
    let containers = job["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["name"], "ferry",
        "podFailurePolicy rules name this container"
    );
    let args = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (c, args)
}

/// Where the container mounts volume `name`, and the mount.
fn mount<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("mount {name}"))
}

/// The pod's args as a process here runs them: mount paths replaced by folders, `-d` by `dest`.
fn localise(args: &[String], tree: &Path, results: &Path, dest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_d = false;
    for a in args {
        let a = if after_d {
            dest.to_string()
        } else if let Some(rest) = a.strip_prefix("/registry") {
            format!("{}{rest}", tree.display())
        } else if let Some(rest) = a.strip_prefix("/results") {
            format!("{}{rest}", results.display())
        } else {
            a.clone()
        };
        after_d = a == "-d";
        out.push(a);
    }
    out
}

/// The Secret's values, as the `secretKeyRef` env entries name them.
fn secret_env(c: &Value, username: &str, password: &str) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let key = e["valueFrom"]["secretKeyRef"]["key"].as_str()?;
            assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "ferry-credentials");
            let value = match key {
                "username" => username,
                "password" => password,
                other => panic!("unknown Secret key {other}"),
            };
            Some((e["name"].as_str().unwrap().to_string(), value.to_string()))
        })
        .collect()
}

#[test]
fn the_jobs_pods_run_as_processes_push_and_validate_a_real_tree() {
    let files = manifests();
    let (push_job, validate_job) = (load(&files[0]), load(&files[1]));
    assert_eq!(push_job["metadata"]["name"], "ferry-push");
    assert_eq!(validate_job["metadata"]["name"], "ferry-validate");

    // The push Job: Indexed, N pods at once, N in `--shard auto/N`, the tree read-only, results under shard-<index>/.
    let spec = &push_job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let (c, args) = container(&push_job);
    let shard = args.iter().position(|a| a == "--shard").expect("--shard");
    let n: u64 = args[shard + 1]
        .strip_prefix("auto/")
        .expect("--shard auto/N")
        .parse()
        .unwrap();
    assert_eq!(spec["completions"], n);
    assert_eq!(spec["parallelism"], n);
    assert!(spec["backoffLimitPerIndex"].as_u64().is_some());
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(mount(c, "registry")["readOnly"], true);
    assert_eq!(mount(c, "registry")["mountPath"], "/registry");
    let results = mount(c, "results");
    assert_eq!(results["mountPath"], "/results");
    assert_eq!(results["subPathExpr"], "shard-$(SHARD_INDEX)");
    let index_env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SHARD_INDEX")
        .expect("SHARD_INDEX declared for subPathExpr");
    assert_eq!(
        index_env["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );

    // A destination that needs the Secret's credentials.
    let (user, password) = ("robot-migration", "pw-k8s-4Tq9");
    let reg = Registry::start_with(RegistryConfig {
        auth: RegistryAuth::htpasswd(user, password),
        ..Default::default()
    })
    .unwrap();
    let dest = format!("http://{}", reg.host());
    let fx = standard_tree(81);
    let volume = workdir();
    let env = secret_env(c, user, password);
    assert_eq!(
        env.len(),
        2,
        "FERRY_USERNAME and FERRY_PASSWORD from the Secret"
    );

    // N pods at once, each with its JOB_COMPLETION_INDEX and its shard-<index>/ folder.
    let children: Vec<_> = (0..n)
        .map(|k| {
            let folder = volume.path().join(format!("shard-{k}"));
            std::fs::create_dir_all(&folder).unwrap(); // the kubelet creates a subPathExpr folder
            let mut cmd = ferry_process();
            cmd.current_dir(&folder)
                .env("JOB_COMPLETION_INDEX", k.to_string())
                .envs(env.iter().map(|(k, v)| (k, v)))
                .args(localise(&args, fx.root(), &folder, &dest))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for (k, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "pod {k}: {stderr}");
        assert!(!stderr.contains(password));
        let folder = volume.path().join(format!("shard-{k}"));
        assert!(
            folder.join("push-failed.txt").is_file(),
            "pod {k} failed list"
        );
        assert!(folder.join("push-report.json").is_file(), "pod {k} report");
    }
    // skopeo, with the Secret's credentials, reads every tag back with its digest.
    let creds = format!("{user}:{password}");
    for (name, tag) in &fx.truth.tags {
        let reference = format!(
            "docker://{}/{}:{}",
            reg.host(),
            default_destination(&tag.repository),
            tag.tag
        );
        let flags = ["--tls-verify=false", "--creds", creds.as_str()];
        assert_eq!(skopeo_digest(&reference, &flags), tag.digest, "{name}");
    }

    // The validate Job, after it: one pod, the same Secret, results under validate/.
    let (c, args) = container(&validate_job);
    assert_eq!(args[0], "validate");
    let sub = mount(c, "results")["subPath"].as_str().unwrap().to_string();
    let folder = volume.path().join(&sub);
    std::fs::create_dir_all(&folder).unwrap();
    let ran = run(ferry()
        .current_dir(&folder)
        .envs(secret_env(c, user, password))
        .args(localise(&args, fx.root(), &folder, &dest)));
    assert_eq!(ran.code, 0, "{}", ran.all());
    assert!(failed_lines(&folder.join("validate-failed.txt")).is_empty());
    let report: Value =
        serde_json::from_slice(&std::fs::read(folder.join("validate-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["counts"]["passed"], fx.truth.tags.len());
}
