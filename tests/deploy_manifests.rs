//! The deployment examples that no test can start as they are (no cluster, no Docker here):
//!
//! - `deploy/kubernetes/`: every manifest passes a real validator, `kubernetes-validate`
//!   (PyPI; the Kubernetes OpenAPI schemas, strict: unknown fields are errors); the gateway
//!   configuration inside the ConfigMap compiles exactly as the gateway would compile it; and
//!   the manifests refer to each other correctly (Secrets and keys, the Redis Service, its
//!   selector, the NetworkPolicies, the Ingress paths of the authorization server). (The
//!   Traefik CRDs have no schema there; the same routes run against a real Traefik in
//!   `tests/front_proxies.rs` and `tests/traefik_authorization_server.rs`.)
//! - `deploy/replicas/`: the compose file parses (python3's `yaml`) into the services and
//!   links it should have, its `gateway.toml` compiles, and its parts run on loopback
//!   addresses without Docker: Redis with the compose file's own command (password, AOF), the
//!   two replicas (the real binary) with that `gateway.toml`, the real nginx with that
//!   `nginx.conf`, server-everything, and the real TypeScript MCP SDK client logging in
//!   through nginx. The login is made with only the first replica running and then used,
//!   refreshed and revoked at the second one alone: the state they share is in Redis.
//!
//! A program that is missing (kubernetes-validate, python3 with `yaml`, nginx, redis-server,
//! node) fails the test under `CI=true` and skips it loudly otherwise.

#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::external::{self, ChildGuard};
use common::oauth::{self, form, post_form, PASSWORD};
use common::process::GatewayProcess;
use common::sdk::{self, run_client_at, ClientOptions, ClientRun, Everything, Sdk};
use serde_json::Value;

/// Set for every compile of a configuration that reads it (`password_env`).
const REDIS_PASSWORD: &str = "0123456789abcdef0123456789abcdef";

/// The authorization server's and discovery paths the gateway must be reachable on (the
/// same list as `tests/traefik_authorization_server.rs`).
const AUTHORIZATION_SERVER_PATHS: &[&str] = &[
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/authorize",
    "/login",
    "/login/github",
    "/login/github/callback",
    "/consent",
    "/token",
    "/register",
    "/register/some-client-id",
    "/revoke",
    "/introspect",
    "/jwks.json",
];

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

fn set_secrets() {
    std::env::set_var("MCP_API_KEY", "a-long-enough-test-key-0123456789");
    std::env::set_var("REDIS_PASSWORD", REDIS_PASSWORD);
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
        "StatefulSet",
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
    set_secrets();
    let toml = configmap_toml(&external::repo_root().join("deploy/kubernetes/configmap.yaml"));
    let config = mcp_auth_gateway::config::from_toml_str(&toml, Path::new("."))
        .unwrap_or_else(|error| panic!("{error}\n{toml}"));
    assert_eq!(
        config.admin.listen.len(),
        1,
        "probes and /verify use the admin port"
    );
    // The authorization server, its state in Redis, the password from the environment.
    let server = config
        .authorization_server
        .as_ref()
        .expect("[authorization_server]");
    assert_eq!(server.issuer, "https://mcp.example.com");
    let redis = config.redis.as_ref().expect("[redis]");
    assert_eq!(redis.url, "redis://redis.mcp.svc.cluster.local:6379/0");
    assert!(
        redis.password.is_some(),
        "the Redis password (password_env)"
    );
    assert!(
        config.server.trust_forwarded_headers,
        "behind the ingress controller the per-address limits need its X-Forwarded-For"
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

// ── Kubernetes: the manifests refer to each other correctly ───────────────────────────

/// Every manifest's documents, parsed by python3's `yaml` (the parser kubernetes-validate
/// uses). `None` after a loud skip when python3 or its `yaml` module is missing.
fn kubernetes_objects() -> Option<Vec<Value>> {
    let mut objects = Vec::new();
    for file in manifests() {
        objects.extend(yaml_documents(&file)?.into_iter().filter(|d| !d.is_null()));
    }
    Some(objects)
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

/// Whether `selector` (matchLabels, or a plain label map) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.get("matchLabels").unwrap_or(selector);
    wanted
        .as_object()
        .is_some_and(|w| !w.is_empty() && w.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The container env var `name` of a pod template: its Secret name and key.
fn secret_ref<'a>(container: &'a Value, name: &str) -> (&'a str, &'a str) {
    let var = container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no env {name} in {container}"));
    let reference = &var["valueFrom"]["secretKeyRef"];
    (
        reference["name"].as_str().expect("secret name"),
        reference["key"].as_str().expect("secret key"),
    )
}

#[test]
fn kubernetes_manifests_refer_to_each_other() {
    let Some(objects) = kubernetes_objects() else {
        return;
    };
    let namespace = |o: &Value| {
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        objects.iter().all(|o| namespace(o) == "mcp"),
        "every object in namespace mcp"
    );
    let secret_has = |name: &str, key: &str| {
        let secret = object(&objects, "Secret", name);
        assert!(
            secret["stringData"].get(key).is_some() || secret["data"].get(key).is_some(),
            "Secret {name} has no key {key}"
        );
    };

    // The gateway: two replicas, both secrets it reads.
    let deployment = object(&objects, "Deployment", "mcp-auth-gateway");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let gateway_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&deployment["spec"]["selector"], gateway_labels));
    let gateway = &deployment["spec"]["template"]["spec"]["containers"][0];
    let (name, key) = secret_ref(gateway, "MCP_API_KEY");
    secret_has(name, key);
    let (gateway_secret, gateway_key) = secret_ref(gateway, "REDIS_PASSWORD");
    secret_has(gateway_secret, gateway_key);
    // ConfigMap updates are picked up by `serve --watch`, which the binary accepts.
    let args: Vec<&str> = gateway["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--watch"), "{args:?}");
    let help = Command::new(common::process::BIN)
        .args(&args)
        .arg("--help")
        .output()
        .expect("serve --help");
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );

    // The ConfigMap's Redis URL names the Redis Service, which selects the StatefulSet's
    // pods on the port Redis listens on.
    set_secrets();
    let configmap = object(&objects, "ConfigMap", "mcp-auth-gateway");
    let toml = configmap["data"]["gateway.toml"]
        .as_str()
        .expect("gateway.toml");
    let config = mcp_auth_gateway::config::from_toml_str(toml, Path::new("."))
        .unwrap_or_else(|error| panic!("{error}"));
    let url = url::Url::parse(&config.redis.as_ref().expect("[redis]").url).expect("URL");
    let host = url.host_str().expect("host");
    let service_name = host
        .strip_suffix(".mcp.svc.cluster.local")
        .unwrap_or_else(|| panic!("{host}: not a Service of namespace mcp"));
    let service = object(&objects, "Service", service_name);
    let redis = object(&objects, "StatefulSet", "redis");
    let redis_labels = &redis["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&service["spec"]["selector"], redis_labels));
    assert!(selects(&redis["spec"]["selector"], redis_labels));
    let port = service["spec"]["ports"][0]["port"].as_u64();
    assert_eq!(port, url.port().map(u64::from), "Service port = URL port");
    let container = &redis["spec"]["template"]["spec"]["containers"][0];
    let script = container["command"][2].as_str().expect("the Redis script");
    for line in [
        format!("port {}", port.expect("port")),
        "requirepass \"$REDIS_PASSWORD\"".to_string(),
        "appendonly yes".to_string(),
        "dir /data".to_string(),
    ] {
        assert!(script.contains(&line), "the Redis script lacks {line:?}");
    }
    // The same Redis command as the compose file's, which the_replicas_example_runs_on_loopback
    // runs (`$$` there is compose's escape for `$`).
    if let Some(compose) = compose() {
        let composed = compose["services"]["redis"]["command"]
            .as_array()
            .expect("command")
            .iter()
            .map(|part| Value::from(part.as_str().expect("a string").replace("$$", "$")))
            .collect::<Vec<_>>();
        assert_eq!(
            container["command"].as_array().expect("command"),
            &composed,
            "redis.yaml and deploy/replicas/docker-compose.yml run Redis alike"
        );
    }
    // Redis requires the password the gateway sends: the same Secret key.
    assert_eq!(
        secret_ref(container, "REDIS_PASSWORD"),
        (gateway_secret, gateway_key)
    );
    // Its data on a PersistentVolumeClaim mounted at /data.
    let claim = redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a volumeClaimTemplate");
    assert!(container["volumeMounts"].as_array().is_some_and(|m| m
        .iter()
        .any(|m| m["name"] == claim && m["mountPath"] == "/data")));

    // Only the gateway's pods reach Redis.
    let policy = objects
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy" && selects(&o["spec"]["podSelector"], redis_labels))
        .expect("a NetworkPolicy for Redis");
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    assert_eq!(rules.len(), 1, "{policy}");
    let sources = rules[0]["from"].as_array().expect("from");
    assert!(
        !sources.is_empty()
            && sources.iter().all(|s| s.get("namespaceSelector").is_none()
                && selects(&s["podSelector"], gateway_labels)),
        "Redis only from the gateway's pods: {policy}"
    );

    // ingress-nginx sends every authorization server path to the gateway's public port.
    let discovery = object(&objects, "Ingress", "mcp-discovery");
    let paths = discovery["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .expect("paths");
    for wanted in AUTHORIZATION_SERVER_PATHS {
        let route = paths
            .iter()
            .find(|p| ingress_path_matches(p, wanted))
            .unwrap_or_else(|| panic!("Ingress mcp-discovery does not route {wanted}"));
        assert_eq!(route["backend"]["service"]["name"], "mcp-auth-gateway");
    }
    // Traefik's IngressRoute sends the same paths to the gateway as the Traefik example
    // that tests/traefik_authorization_server.rs runs.
    let route = object(&objects, "IngressRoute", "mcp")["spec"]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["services"][0]["name"] == "mcp-auth-gateway")
        .expect("an IngressRoute route to the gateway");
    let dynamic = yaml_documents(
        &external::repo_root().join("deploy/traefik-authorization-server/dynamic.yml"),
    )
    .expect("parsed before");
    let rule = dynamic[0]["http"]["routers"]["mcp-authorization-server"]["rule"]
        .as_str()
        .expect("rule");
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        words(route["match"].as_str().expect("match")),
        words(&format!("Host(`mcp.example.com`) && ( {rule})")),
    );
    for not_exposed in ["/verify", "/metrics", "/healthz", "/loginx", "/tokens"] {
        assert!(
            !paths.iter().any(|p| ingress_path_matches(p, not_exposed)),
            "Ingress mcp-discovery exposes {not_exposed}"
        );
    }
}

/// Kubernetes Ingress path matching: `Exact`, or `Prefix` by whole path segments.
fn ingress_path_matches(path: &Value, request: &str) -> bool {
    let prefix = path["path"].as_str().unwrap_or("");
    match path["pathType"].as_str() {
        Some("Exact") => request == prefix,
        Some("Prefix") => {
            let prefix = prefix.trim_end_matches('/');
            request == prefix
                || request
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        other => panic!("pathType {other:?}"),
    }
}

// ── deploy/replicas: the compose file and its parts ───────────────────────────────────

fn replicas_file(name: &str) -> PathBuf {
    external::repo_root().join("deploy/replicas").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_replicas_gateway_config_compiles() {
    set_secrets();
    let path = replicas_file("gateway.toml");
    let config = mcp_auth_gateway::config::from_toml_str(&read(&path), path.parent().unwrap())
        .unwrap_or_else(|error| panic!("deploy/replicas/gateway.toml:\n{error}"));
    let redis = config.redis.as_ref().expect("[redis]");
    assert_eq!(redis.url, "redis://redis:6379/0");
    assert!(redis.password.is_some(), "password_env");
    let server = config
        .authorization_server
        .as_ref()
        .expect("[authorization_server]");
    assert_eq!(server.issuer, "http://localhost:8000", "nginx's URL");
    assert!(config.server.trust_forwarded_headers);
}

/// The compose file as JSON (python3's `yaml`, which also merges `<<:` anchors as compose
/// does); `None` after a loud skip.
fn compose() -> Option<Value> {
    let mut documents = yaml_documents(&replicas_file("docker-compose.yml"))?;
    assert_eq!(documents.len(), 1, "one YAML document");
    Some(documents.remove(0))
}

#[test]
fn the_compose_file_has_the_services_and_links_it_should() {
    let Some(compose) = compose() else {
        return;
    };
    let services = compose["services"].as_object().expect("services");
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["gateway-1", "gateway-2", "mcp", "nginx", "redis"]);
    let service = |name: &str| &compose["services"][name];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().expect("a string").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };

    // Only nginx is reachable from the host, on its loopback.
    for name in &names {
        let ports = strings(&service(name)["ports"]);
        if *name == "nginx" {
            assert_eq!(ports, ["127.0.0.1:8000:8000"]);
        } else {
            assert!(ports.is_empty(), "{name} publishes {ports:?}");
        }
    }
    let nginx = service("nginx");
    assert_eq!(
        strings(&nginx["volumes"]),
        ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    );
    assert!(replicas_file("nginx.conf").is_file());
    let nginx_conf = read(&replicas_file("nginx.conf"));
    assert!(nginx_conf.contains("listen 8000;"), "nginx listens on 8000");

    // Two identical gateways from the repository's Dockerfile, with this gateway.toml,
    // each a server of nginx's upstream, started once Redis answers.
    let redis_password = &service("redis")["environment"]["REDIS_PASSWORD"];
    assert!(
        redis_password
            .as_str()
            .is_some_and(|v| v.starts_with("${REDIS_PASSWORD:?")),
        "Redis's password comes from the environment / .env and must be set"
    );
    for name in ["gateway-1", "gateway-2"] {
        let gateway = service(name);
        assert_eq!(gateway, service("gateway-1"), "{name} = gateway-1");
        let context = replicas_file(gateway["build"]["context"].as_str().expect("context"));
        let dockerfile = gateway["build"]["dockerfile"].as_str().expect("dockerfile");
        assert!(
            context.join(dockerfile).is_file() && context.join("Cargo.toml").is_file(),
            "{name} builds the repository's {dockerfile}"
        );
        assert_eq!(
            strings(&gateway["volumes"]),
            ["./gateway.toml:/etc/mcp-auth-gateway/gateway.toml:ro"]
        );
        assert_eq!(&gateway["environment"]["REDIS_PASSWORD"], redis_password);
        assert_eq!(
            gateway["depends_on"]["redis"]["condition"],
            "service_healthy"
        );
        assert!(
            nginx_conf.contains(&format!("server {name}:8080 ")),
            "nginx.conf balances to {name}:8080"
        );
        assert!(strings(&nginx["depends_on"]).contains(&name.to_string()));
    }
    set_secrets();
    let config = mcp_auth_gateway::config::from_toml_str(
        &read(&replicas_file("gateway.toml")),
        &replicas_file(""),
    )
    .expect("gateway.toml compiles");
    assert_eq!(
        config.server.listen[0].port(),
        8080,
        "nginx's upstream port"
    );

    // Redis: password, AOF on the named volume, on the port and host gateway.toml names.
    let redis = service("redis");
    let script = redis["command"][2].as_str().expect("the Redis script");
    for line in [
        "exec redis-server - <<EOF",
        "port 6379",
        "requirepass \"$$REDIS_PASSWORD\"",
        "appendonly yes",
        "dir /data",
    ] {
        assert!(script.contains(line), "the Redis script lacks {line:?}");
    }
    assert_eq!(strings(&redis["volumes"]), ["redis-data:/data"]);
    assert!(compose["volumes"].get("redis-data").is_some());
    let url = url::Url::parse(&config.redis.as_ref().expect("[redis]").url).expect("URL");
    assert_eq!(url.host_str(), Some("redis"), "the Redis service's name");
    assert_eq!(url.port(), Some(6379));

    // The MCP server: installed when its image is built, nothing fetched at start; on the
    // host and port of the route's upstream.
    let mcp = service("mcp");
    let dockerfile = mcp["build"]["dockerfile_inline"]
        .as_str()
        .expect("dockerfile_inline");
    assert!(
        dockerfile.contains("RUN npm install --global"),
        "{dockerfile}"
    );
    assert!(dockerfile.contains("ENV PORT=3001"), "{dockerfile}");
    assert!(
        mcp.get("command").is_none(),
        "no npx / npm at container start"
    );
    let upstream = url::Url::parse(&route_upstream(&replicas_file("gateway.toml"))).unwrap();
    assert_eq!(
        (upstream.host_str(), upstream.port()),
        (Some("mcp"), Some(3001))
    );

    // Redis and the MCP server only on the internal network, which the gateways share.
    assert_eq!(compose["networks"]["backend"]["internal"], true);
    for name in ["redis", "mcp"] {
        assert_eq!(strings(&service(name)["networks"]), ["backend"], "{name}");
    }
    for name in ["gateway-1", "gateway-2"] {
        assert!(strings(&service(name)["networks"]).contains(&"backend".to_string()));
    }
    assert!(!strings(&nginx["networks"]).contains(&"backend".to_string()));
}

/// The `upstream` of the configuration's first route, as written.
fn route_upstream(path: &Path) -> String {
    let value: toml::Value = toml::from_str(&read(path)).expect("TOML");
    value["routes"][0]["upstream"]
        .as_str()
        .expect("upstream")
        .to_string()
}

/// Runs the replicas example without Docker: the compose file's Redis command, two gateway
/// processes with its gateway.toml, nginx with its nginx.conf, on loopback addresses.
#[tokio::test]
async fn the_replicas_example_runs_on_loopback() {
    let Some(compose) = compose() else {
        return;
    };
    let Some(nginx) = external::require("nginx") else {
        return;
    };
    let Some(redis_server) = external::require("redis-server") else {
        return;
    };
    let Some(node) = sdk::node() else {
        return;
    };
    let dir = oauth::temp_dir("replicas-example");
    let server = Everything::start(&node, "replicas-example", common::free_port()).await;

    // Redis, with the compose file's own command (`$$` is compose's escape for `$`).
    let redis_port = common::free_port();
    let script = compose["services"]["redis"]["command"][2]
        .as_str()
        .expect("the Redis script")
        .replace("$$", "$");
    let data = dir.join("redis-data");
    std::fs::create_dir_all(&data).expect("redis data dir");
    let script = substitute_all(
        "docker-compose.yml (redis)",
        &script,
        &[
            ("port 6379", format!("bind 127.0.0.1\nport {redis_port}")),
            ("dir /data", format!("dir {}", data.display())),
        ],
    );
    let redis_log = std::fs::File::create(dir.join("redis.log")).expect("redis log");
    let redis = ChildGuard(
        Command::new("sh")
            .args(["-c", &script])
            .env("REDIS_PASSWORD", REDIS_PASSWORD)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    redis_server.parent().expect("dir").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null())
            .stdout(redis_log.try_clone().expect("log"))
            .stderr(redis_log)
            .spawn()
            .expect("start redis-server"),
    );
    external::wait_for_port(redis_port, "redis-server").await;

    // The replicas' configuration: each listens on its own port (REPLICA_PORT), both claim
    // nginx's URL; plus the test user alice.
    let (lb_port, port_1, port_2) = three_free_ports();
    let toml = substitute_all(
        "gateway.toml",
        &read(&replicas_file("gateway.toml")),
        &[
            ("0.0.0.0:8080", "127.0.0.1:${REPLICA_PORT}".to_string()),
            (
                "http://localhost:8000",
                format!("http://127.0.0.1:{lb_port}"),
            ),
            (
                "redis://redis:6379/0",
                format!("redis://127.0.0.1:{redis_port}/0"),
            ),
            (
                "http://mcp:3001",
                format!("http://127.0.0.1:{}", server.port),
            ),
        ],
    ) + &alice();
    let config = dir.join("gateway.toml");
    std::fs::write(&config, toml).expect("write gateway.toml");
    let replica = |port: u16, name: &str| {
        let (config, log, port_text) = (config.clone(), dir.join(name), port.to_string());
        async move {
            GatewayProcess::start(
                &config,
                port,
                &log,
                &[
                    ("REPLICA_PORT", port_text.as_str()),
                    ("REDIS_PASSWORD", REDIS_PASSWORD),
                ],
            )
            .await
        }
    };

    // nginx with the example's nginx.conf, the replicas' addresses substituted.
    let conf = substitute_all(
        "nginx.conf",
        &read(&replicas_file("nginx.conf")),
        &[
            ("listen 8000;", format!("listen 127.0.0.1:{lb_port};")),
            ("gateway-1:8080", format!("127.0.0.1:{port_1}")),
            ("gateway-2:8080", format!("127.0.0.1:{port_2}")),
        ],
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let mcp_url = format!("http://127.0.0.1:{lb_port}/mcp");
    let redirect = "http://127.0.0.1:33418/callback";
    let state = dir.join("ts-client.json");
    let with_state = || ClientOptions {
        state: Some(&state),
        client_metadata_url: None,
        provider: None,
    };

    // 1. Only gateway-1 runs (gateway-2's port is closed: nginx passes its share to
    //    gateway-1). The SDK starts from nginx's /mcp URL and logs in: every piece of the
    //    authorization server's state is made by gateway-1.
    let first_replica = replica(port_1, "gateway-1.log").await;
    let mut lb = Nginx::start(&nginx, &dir, lb_port).await;
    let first = run_client_at(
        &mcp_url,
        redirect,
        &server,
        Sdk::TypeScript,
        &node,
        with_state(),
    )
    .await;
    let logs = || {
        format!(
            "\ngateway-1:\n{}\ngateway-2:\n{}\nnginx:\n{}",
            read_lossy(&dir.join("gateway-1.log")),
            read_lossy(&dir.join("gateway-2.log")),
            read_lossy(&dir.join("nginx.log"))
        )
    };
    let ctx = |run: &ClientRun| format!("{}{}", run.context(), logs());
    first.assert_ok();
    assert_eq!(first.get("/registrations"), 1, "{}", ctx(&first));
    assert_eq!(
        first.pages(),
        ["login", "consent", "redirect"],
        "{}",
        ctx(&first)
    );
    first.assert_grants(&["authorization_code"]);
    let issuer = format!("http://127.0.0.1:{lb_port}");
    assert_eq!(first.get("/accessTokenClaims/iss"), issuer.as_str());
    assert_eq!(first.get("/accessTokenClaims/aud"), mcp_url.as_str());
    assert_eq!(first.get("/accessTokenClaims/sub"), "local:alice");

    // 2. gateway-2 starts, gateway-1 stops; nginx restarts (forgetting that gateway-2 was
    //    down, as it would 10 s later). The stored access token works at gateway-2, which
    //    never saw the login: same signing key, from Redis.
    let second_replica = replica(port_2, "gateway-2.log").await;
    drop(first_replica);
    lb.restart().await;
    let second = run_client_at(
        &mcp_url,
        redirect,
        &server,
        Sdk::TypeScript,
        &node,
        with_state(),
    )
    .await;
    second.assert_ok();
    assert_eq!(second.get("/storedTokensAtStart"), true, "{}", ctx(&second));
    assert_eq!(second.get("/authorizations"), 0, "{}", ctx(&second));
    assert_eq!(second.get("/mcpUnauthorized"), 0, "{}", ctx(&second));
    second.assert_grants(&[]);

    // 3. The access token revoked at gateway-2: the SDK gets a 401 and refreshes there with
    //    the refresh token gateway-1 issued (its family is in Redis), without a login.
    let saved: Value = serde_json::from_str(&read(&state)).expect("client state");
    let access = saved["tokens"]["access_token"].as_str().expect("token");
    let client_id = saved["clientInformation"]["client_id"]
        .as_str()
        .expect("client_id");
    let lb_addr = std::net::SocketAddr::from(([127, 0, 0, 1], lb_port));
    let revoked = post_form(
        lb_addr,
        "/revoke",
        &form(&[("token", access), ("client_id", client_id)]),
        &[],
    )
    .await;
    assert_eq!(revoked.status, 200, "revoke: {}{}", revoked.body, logs());
    let third = run_client_at(
        &mcp_url,
        redirect,
        &server,
        Sdk::TypeScript,
        &node,
        with_state(),
    )
    .await;
    third.assert_ok();
    assert_eq!(third.get("/authorizations"), 0, "{}", ctx(&third));
    assert_eq!(third.get("/mcpUnauthorized"), 1, "{}", ctx(&third));
    third.assert_grants(&["refresh_token"]);
    assert_eq!(third.get("/accessTokenClaims/client_id"), client_id);

    // 4. Redis: the state is there under the key prefix, behind the password, with the
    //    compose file's persistence settings.
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/0")).expect("URL");
    let refused = match client.get_multiplexed_async_connection().await {
        Err(error) => error.to_string(),
        Ok(mut anonymous) => redis::cmd("PING")
            .query_async::<String>(&mut anonymous)
            .await
            .expect_err("Redis answers no one without the password")
            .to_string(),
    };
    assert!(refused.contains("NOAUTH"), "{refused}");
    let client = redis::Client::open(format!(
        "redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0"
    ))
    .expect("URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis with the password");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    assert!(!keys.is_empty(), "the gateways keep their state in Redis");
    assert!(
        keys.iter().all(|k| k.starts_with("mcp-gateway:")),
        "every key under the key prefix: {keys:?}"
    );
    for (setting, expected) in [("appendonly", "yes"), ("maxmemory-policy", "noeviction")] {
        let value: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(setting)
            .query_async(&mut connection)
            .await
            .expect("CONFIG GET");
        assert_eq!(value, [setting, expected]);
    }

    drop(lb);
    drop(second_replica);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

fn alice() -> String {
    let hash = mcp_auth_gateway::authorization_server::cli::hash_password(PASSWORD)
        .expect("hash password");
    format!(
        r#"
[[authorization_server.users]]
username = "alice"
password_hash = "{hash}"
name = "Alice Example"
email = "alice@example.com"
"#
    )
}

fn three_free_ports() -> (u16, u16, u16) {
    loop {
        let ports = (
            common::free_port(),
            common::free_port(),
            common::free_port(),
        );
        if ports.0 != ports.1 && ports.1 != ports.2 && ports.0 != ports.2 {
            return ports;
        }
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// nginx with `dir`/nginx.conf (prefix `dir`), output to `dir`/nginx.log.
struct Nginx {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Nginx {
    async fn start(program: &Path, dir: &Path, port: u16) -> Nginx {
        let mut nginx = Nginx {
            program: program.to_path_buf(),
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        nginx.spawn().await;
        nginx
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nginx.log"))
            .expect("nginx log");
        let child = Command::new(&self.program)
            .arg("-p")
            .arg(format!("{}/", self.dir.display()))
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nginx");
        self.child = Some(child);
        external::wait_for_port(self.port, "nginx").await;
    }

    /// Stops nginx and starts it again with the same configuration and port.
    async fn restart(&mut self) {
        self.stop();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spawn().await;
    }

    /// SIGTERM (nginx's fast shutdown: the master stops its workers, SIGKILL would orphan
    /// them with the port), then wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Replaces each pattern (every occurrence; each must occur at least once).
fn substitute_all(name: &str, text: &str, table: &[(&str, String)]) -> String {
    let mut text = text.to_string();
    for (from, to) in table {
        assert!(
            text.contains(from),
            "deploy/replicas/{name} no longer contains {from:?}"
        );
        text = text.replace(from, to);
    }
    text
}

/// The YAML documents of `path` as JSON, parsed by python3's `yaml` (safe loader); `None`
/// after a loud skip when python3 or its `yaml` module is missing.
fn yaml_documents(path: &Path) -> Option<Vec<Value>> {
    let python = external::require("python3")?;
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 print(json.dumps(list(yaml.safe_load_all(f))))",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("No module named 'yaml'") {
        external::skip(
            "python3 yaml",
            "python3 cannot import yaml (PyYAML; kubernetes-validate installs it)",
        );
        return None;
    }
    assert!(
        output.status.success(),
        "{} is not valid YAML:\n{stderr}",
        path.display()
    );
    Some(serde_json::from_slice(&output.stdout).expect("JSON from python3"))
}

/// The container image's HEALTHCHECK command, as written in deploy/docker/Dockerfile, run
/// against a real gateway (its port in place of the image's 8080): healthy while it
/// serves, unhealthy when nothing answers.
#[tokio::test]
async fn the_container_health_check_probes_a_real_gateway() {
    let dockerfile = read(&external::repo_root().join("deploy/docker/Dockerfile"));
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    let exec = &line[line.find("CMD [").expect("exec form") + "CMD ".len()..];
    let argv: Vec<String> = serde_json::from_str(exec.trim()).expect("a JSON array");
    assert_eq!(argv[0], "/usr/local/bin/mcp-auth-gateway");
    assert_eq!(argv[1], "probe");
    assert!(dockerfile.contains("EXPOSE 8080"));
    let run = |port: u16| {
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")))
            .collect();
        Command::new(common::process::BIN)
            .args(&args)
            .output()
            .expect("run the probe")
    };
    let upstream = common::Upstream::start().await;
    let gateway = common::TestGateway::start(&common::gateway::standard_config(
        &upstream.url("/mcp"),
        "",
        "",
    ))
    .await;
    let healthy = run(gateway.addr.port());
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    gateway.shutdown().await;
    let dead = common::dead_port();
    let gone = run(dead.port);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("refused"));
}

/// Neither compose example downloads anything when its containers start: the MCP server is
/// installed into its image when it is built, the same version the tests run.
#[test]
fn the_compose_examples_install_at_build_time_not_at_start() {
    let package: Value = serde_json::from_str(&read(
        &external::repo_root().join("tests/node/package.json"),
    ))
    .expect("package.json");
    let version = package["devDependencies"]["@modelcontextprotocol/server-everything"]
        .as_str()
        .or(package["dependencies"]["@modelcontextprotocol/server-everything"].as_str())
        .expect("the tests' server-everything version");
    for example in ["deploy/traefik", "deploy/replicas"] {
        let path = external::repo_root()
            .join(example)
            .join("docker-compose.yml");
        let Some(mut documents) = yaml_documents(&path) else {
            return;
        };
        let compose = documents.remove(0);
        let services = compose["services"].as_object().expect("services");
        for (name, service) in services {
            let command = service["command"].to_string();
            assert!(
                !command.contains("npx") && !command.contains("npm"),
                "{example}: {name} installs at start: {command}"
            );
        }
        let inline = compose["services"]["mcp"]["build"]["dockerfile_inline"]
            .as_str()
            .unwrap_or_else(|| panic!("{example}: mcp is built"));
        assert!(
            inline.contains(&format!(
                "npm install --global --omit=dev @modelcontextprotocol/server-everything@{version}"
            )),
            "{example}: {inline}"
        );
        assert!(inline.contains("CMD [\"mcp-server-everything\", \"streamableHttp\"]"));
    }
}
