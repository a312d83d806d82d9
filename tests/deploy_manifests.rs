//! The Kubernetes manifests in `deploy/kubernetes/` are validated by a real validator that
//! runs here, `kubernetes-validate` (PyPI; the Kubernetes OpenAPI schemas, strict: unknown
//! fields are errors), and the gateway configuration inside the ConfigMap is compiled exactly
//! as the gateway would compile it. (The Traefik CRDs have no schema there; the same
//! middleware chain runs against a real Traefik in `tests/front_proxies.rs`.)

mod common;

use std::path::Path;
use std::process::Command;

use common::external;

fn manifests() -> Vec<std::path::PathBuf> {
    let dir = external::repo_root().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn manifests_pass_strict_schema_validation() {
    let Some(validator) = external::require("kubernetes-validate") else {
        return;
    };
    let output = Command::new(validator)
        .args(["--strict", "--quiet"])
        .args(manifests())
        .output()
        .expect("run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    assert!(!report.contains("ERROR"), "{report}");
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
        "Ingress",
    ] {
        let found = manifests().iter().any(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .contains(&format!("kind: {kind}\n"))
        });
        assert!(found, "no {kind} in deploy/kubernetes");
    }
}

/// The TOML block under `gateway.toml: |` in the ConfigMap, dedented.
fn configmap_toml(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("configmap.yaml");
    let mut lines = text.lines().skip_while(|l| l.trim() != "gateway.toml: |");
    lines.next().expect("a gateway.toml block");
    let block: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    block
        .iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_holds_a_configuration_that_compiles() {
    std::env::set_var("MCP_API_KEY", "a-long-enough-test-key-0123456789");
    let toml = configmap_toml(&external::repo_root().join("deploy/kubernetes/configmap.yaml"));
    let config = mcp_auth_gateway::config::from_toml_str(&toml, Path::new("."))
        .unwrap_or_else(|error| panic!("{error}\n{toml}"));
    assert_eq!(
        config.admin.listen.len(),
        1,
        "probes and /verify use the admin port"
    );
    let deployment =
        std::fs::read_to_string(external::repo_root().join("deploy/kubernetes/deployment.yaml"))
            .expect("deployment.yaml");
    for probe in [
        "path: /healthz",
        "path: /readyz",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
    ] {
        assert!(deployment.contains(probe), "{probe}");
    }
}
