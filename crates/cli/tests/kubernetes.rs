//! The Kubernetes manifests of `deploy/kubernetes` against the Kubernetes
//! API types (`k8s-openapi`, strictly: a manifest must survive a round trip
//! through its type unchanged, so a misspelt or misplaced field fails) and
//! against the binary: every flag and variable exists, the ports, probes,
//! grace period, RBAC, disruption budget and network policy agree with what
//! the node does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `value` as a `T`, refusing anything the type does not hold.
fn strict<T: DeserializeOwned + serde::Serialize>(what: &str, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, value, "{what}: a field the type does not know, or a wrong type");
    typed
}

/// The resources a kustomization lists, by kind, as JSON.
fn resources(kustomization: &Path) -> Vec<(PathBuf, Value)> {
    let k = yaml(kustomization);
    let base = kustomization.parent().unwrap();
    k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .filter(|r| r.ends_with(".yaml"))
        .map(|r| (base.join(r), yaml(&base.join(r))))
        .collect()
}

/// The flags and environment variables `cart-actor serve` takes.
fn binary_options() -> (BTreeSet<String>, BTreeSet<String>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cart-actor"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches([',', '<', '>']).split('=').next().unwrap().to_owned())
        .collect();
    let envs = help
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect();
    (flags, envs)
}

/// The value of `--flag=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().find_map(|a| a.strip_prefix(&format!("{name}=")))
}

fn seconds(duration: &str) -> i64 {
    duration.strip_suffix('s').and_then(|s| s.parse().ok()).expect("a duration in seconds")
}

#[test]
fn the_base_parses_strictly_and_agrees_with_the_binary() {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (path, value) in resources(&dir().join("base/kustomization.yaml")) {
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let what = path.display().to_string();
        match kind.as_str() {
            "Deployment" => drop(strict::<Deployment>(&what, &value)),
            "Service" => drop(strict::<Service>(&what, &value)),
            "ServiceAccount" => drop(strict::<ServiceAccount>(&what, &value)),
            "Role" => drop(strict::<Role>(&what, &value)),
            "RoleBinding" => drop(strict::<RoleBinding>(&what, &value)),
            "PodDisruptionBudget" => drop(strict::<PodDisruptionBudget>(&what, &value)),
            "NetworkPolicy" => drop(strict::<NetworkPolicy>(&what, &value)),
            other => panic!("{what}: unexpected kind {other}"),
        }
        by_kind.entry(kind).or_default().push(value);
    }
    let one = |kind: &str| by_kind[kind][0].clone();
    let deployment: Deployment = serde_json::from_value(one("Deployment")).unwrap();
    let spec = deployment.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    let (flags, envs) = binary_options();
    assert_eq!(args[0], "serve");
    for arg in &args[1..] {
        let name = arg.split('=').next().unwrap();
        assert!(flags.contains(name), "{name} is no flag of cart-actor serve");
    }
    let env_names: Vec<String> =
        container.env.clone().unwrap().iter().map(|e| e.name.clone()).collect();
    assert!(env_names.contains(&"POD_IP".to_owned()), "the advertised address");
    for name in env_names.iter().filter(|n| *n != "POD_IP") {
        assert!(envs.contains(name), "{name} is read by no flag");
    }
    let pod_ip = container.env.clone().unwrap().into_iter().find(|e| e.name == "POD_IP").unwrap();
    let field = pod_ip.value_from.unwrap().field_ref.unwrap().field_path;
    assert_eq!(field, "status.podIP");

    // Ports: the container's named ports are where the flags listen.
    let ports: BTreeMap<String, i32> = container
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.container_port))
        .collect();
    for (name, flag_name) in [
        ("http", "--http-addr"),
        ("internal", "--internal-addr"),
        ("grpc", "--grpc-addr"),
        ("control", "--control-addr"),
    ] {
        let listen = flag(&args, flag_name).unwrap();
        assert_eq!(listen, format!("0.0.0.0:{}", ports[name]), "{flag_name}");
    }
    // Every Service targets a named port the container has.
    for service in &by_kind["Service"] {
        let service: Service = serde_json::from_value(service.clone()).unwrap();
        let spec = service.spec.unwrap();
        for port in spec.ports.unwrap() {
            match port.target_port.unwrap() {
                IntOrString::String(name) => assert!(ports.contains_key(&name), "{name}"),
                IntOrString::Int(n) => panic!("target port {n}: name it"),
            }
        }
        if service.metadata.name.as_deref() == Some("cart-actor-cluster") {
            assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
            assert_eq!(spec.publish_not_ready_addresses, Some(true));
        }
    }

    // Probes on the public port (the internal one may need a token).
    let probe_path = |p: Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.unwrap().http_get.unwrap();
        assert_eq!(get.port, IntOrString::String("http".into()));
        get.path.unwrap()
    };
    assert_eq!(probe_path(container.liveness_probe.clone()), "/healthz");
    assert_eq!(probe_path(container.readiness_probe.clone()), "/readyz");
    assert_eq!(probe_path(container.startup_probe.clone()), "/readyz");

    // The grace period outlasts the drain and the shutdown.
    let drain = seconds(flag(&args, "--drain-delay").unwrap());
    let shutdown = seconds(flag(&args, "--shutdown-timeout").unwrap());
    assert!(drain > 0, "a drain delay, so endpoints update before the node leaves");
    assert!(pod.termination_grace_period_seconds.unwrap() > drain + shutdown);

    // CPU requested, never limited.
    let resources = container.resources.clone().unwrap();
    assert!(resources.requests.unwrap().contains_key("cpu"));
    assert!(!resources.limits.unwrap_or_default().contains_key("cpu"));

    // Discovery's pod watch: allowed, for the pods' own service account.
    assert_eq!(flag(&args, "--discovery"), Some("kubernetes"));
    let role: Role = serde_json::from_value(one("Role")).unwrap();
    let rule = &role.rules.unwrap()[0];
    assert_eq!(rule.resources.clone().unwrap(), ["pods"]);
    let verbs: BTreeSet<String> = rule.verbs.iter().cloned().collect();
    assert_eq!(verbs, ["get", "list", "watch"].map(String::from).into());
    let binding: RoleBinding = serde_json::from_value(one("RoleBinding")).unwrap();
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(Some(&subject.name), pod.service_account_name.as_ref());
    let selector = flag(&args, "--k8s-selector").unwrap();
    let (key, value) = selector.split_once('=').unwrap();
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels.get(key).map(String::as_str), Some(value), "the pods match the selector");

    // A majority of the replicas stays up through disruptions.
    let pdb: PodDisruptionBudget = serde_json::from_value(one("PodDisruptionBudget")).unwrap();
    let replicas = spec.replicas.unwrap();
    let min = match pdb.spec.unwrap().min_available.unwrap() {
        IntOrString::Int(n) => n,
        IntOrString::String(s) => panic!("minAvailable {s}: give a count"),
    };
    assert!(min > replicas / 2 && min < replicas, "{min} of {replicas}");

    // The gRPC ports only from cart-actor pods; the internal port only from
    // named namespaces.
    let policy: NetworkPolicy = serde_json::from_value(one("NetworkPolicy")).unwrap();
    for rule in policy.spec.unwrap().ingress.unwrap() {
        let ports: Vec<i32> = rule
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| match p.port.unwrap() {
                IntOrString::Int(n) => n,
                IntOrString::String(s) => ports[&s],
            })
            .collect();
        let from = rule.from.unwrap_or_default();
        if ports.contains(&ports_of(&args, "--grpc-addr"))
            || ports.contains(&ports_of(&args, "--control-addr"))
        {
            assert!(
                from.iter().all(|f| f.pod_selector.is_some() && f.namespace_selector.is_none())
            );
            assert!(!from.is_empty());
        }
        if ports.contains(&ports_of(&args, "--internal-addr")) {
            assert!(!from.is_empty() && from.iter().all(|f| f.namespace_selector.is_some()));
        }
        if from.is_empty() {
            assert_eq!(ports, [ports_of(&args, "--http-addr")], "only the storefront port is open");
        }
    }
}

fn ports_of(args: &[String], name: &str) -> i32 {
    flag(args, name).unwrap().rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn each_overlay_picks_a_store_the_binary_knows() {
    let (_, envs) = binary_options();
    for overlay in ["postgres", "file-rwx"] {
        let k = dir().join("overlays").join(overlay).join("kustomization.yaml");
        let kustomization = yaml(&k);
        assert_eq!(kustomization["resources"][0], "../../base", "{overlay}");
        for (path, value) in resources(&k) {
            let _: PersistentVolumeClaim = strict(&path.display().to_string(), &value);
            let modes = value["spec"]["accessModes"].as_array().unwrap();
            assert_eq!(modes, &[Value::from("ReadWriteMany")], "every node mounts it");
        }
        let patch_path =
            k.parent().unwrap().join(kustomization["patches"][0]["path"].as_str().unwrap());
        let patch = yaml(&patch_path);
        assert_eq!(patch["kind"], "Deployment");
        assert_eq!(patch["metadata"]["name"], "cart-actor");
        let pod = &patch["spec"]["template"]["spec"];
        let container: Container = strict(overlay, &pod["containers"][0]);
        assert_eq!(container.name, "cart-actor", "merges into the base's container");
        let volumes: Vec<Volume> = strict(overlay, &pod["volumes"]);
        let env: BTreeMap<String, Option<String>> =
            container.env.unwrap().into_iter().map(|e| (e.name, e.value)).collect();
        for name in env.keys() {
            assert!(envs.contains(name), "{overlay}: {name} is read by no flag");
        }
        let mounted: BTreeSet<String> =
            container.volume_mounts.unwrap().into_iter().map(|m| m.name).collect();
        let declared: BTreeSet<String> = volumes.into_iter().map(|v| v.name).collect();
        assert_eq!(mounted, declared, "{overlay}: every volume mounted");
        match overlay {
            "postgres" => assert!(
                env.contains_key("CART_STORE") && env.contains_key("CART_STORE_PASSWORD_FILE")
            ),
            _ => assert_eq!(env.get("CART_STORE"), Some(&Some("file".to_owned()))),
        }
    }
}

/// The Secrets the Deployment and its overlays use: name to the keys read.
/// A secret volume's keys are its `items`, or else the files under its
/// mount path that the flags name.
fn secrets_used() -> BTreeMap<String, BTreeSet<String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let base = yaml(&dir().join("base/deployment.yaml"));
    let overlay = yaml(&dir().join("overlays/postgres/deployment.yaml"));
    let args: Vec<String> =
        serde_json::from_value(base["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .unwrap();
    for deployment in [&base, &overlay] {
        let pod = &deployment["spec"]["template"]["spec"];
        let container: Container = serde_json::from_value(pod["containers"][0].clone()).unwrap();
        let volumes: Vec<Volume> = serde_json::from_value(pod["volumes"].clone()).unwrap();
        for env in container.env.unwrap_or_default() {
            if let Some(r) = env.value_from.and_then(|v| v.secret_key_ref) {
                used.entry(r.name).or_default().insert(r.key);
            }
        }
        for volume in volumes {
            let Some(secret) = volume.secret else { continue };
            let name = secret.secret_name.unwrap();
            let keys: Vec<String> = match secret.items {
                Some(items) => items.into_iter().map(|i| i.key).collect(),
                None => {
                    let mount = container
                        .volume_mounts
                        .clone()
                        .unwrap()
                        .into_iter()
                        .find(|m| m.name == volume.name)
                        .unwrap()
                        .mount_path;
                    args.iter()
                        .filter_map(|a| a.split_once('=').map(|(_, v)| v))
                        .filter_map(|v| v.strip_prefix(&format!("{mount}/")))
                        .map(str::to_owned)
                        .collect()
                }
            };
            used.entry(name).or_default().extend(keys);
        }
    }
    used
}

/// The Secrets a kustomization's `secretGenerator` makes: name to keys.
fn generated(kustomization: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let k = yaml(kustomization);
    assert_eq!(
        k["generatorOptions"]["disableNameSuffixHash"], true,
        "the Deployment names the Secrets as they are"
    );
    k["secretGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let keys = g["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().split('=').next().unwrap().to_owned())
                .collect();
            (g["name"].as_str().unwrap().to_owned(), keys)
        })
        .collect()
}

/// A cert-manager object, strictly: the fields this repository uses.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CertManager<S> {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: S,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CertificateSpec {
    secret_name: String,
    #[serde(rename = "isCA", skip_serializing_if = "Option::is_none")]
    is_ca: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    common_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renew_before: Option<String>,
    private_key: PrivateKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    usages: Option<Vec<String>>,
    issuer_ref: IssuerRef,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrivateKey {
    algorithm: String,
    size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_policy: Option<String>,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct IssuerRef {
    name: String,
    kind: String,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssuerSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    self_signed: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<CaIssuer>,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaIssuer {
    secret_name: String,
}

fn hours(duration: &str) -> u64 {
    duration.strip_suffix('h').and_then(|h| h.parse().ok()).expect("a duration in hours")
}

#[test]
fn every_secret_the_pods_use_is_provided_and_cert_manager_issues_the_tls_one() {
    let component = dir().join("components/cert-manager/kustomization.yaml");
    assert_eq!(yaml(&component)["kind"], "Component", "optional: an overlay adds it");
    let mut certificates = BTreeMap::new();
    let mut issuers = BTreeMap::new();
    for (path, value) in resources(&component) {
        let what = path.display().to_string();
        assert_eq!(value["apiVersion"], "cert-manager.io/v1", "{what}");
        match value["kind"].as_str() {
            Some("Certificate") => {
                let c: CertManager<CertificateSpec> = strict(&what, &value);
                certificates.insert(c.metadata.name.clone().unwrap(), c.spec);
            }
            Some("Issuer") => {
                let i: CertManager<IssuerSpec> = strict(&what, &value);
                issuers.insert(i.metadata.name.clone().unwrap(), i.spec);
            }
            other => panic!("{what}: unexpected kind {other:?}"),
        }
    }
    // The nodes' certificate: the Secret the pods mount, for both ends of
    // a connection, from a CA issuer whose CA a self-signed issuer made.
    let used = secrets_used();
    let node = certificates.values().find(|c| c.is_ca != Some(true)).expect("a node certificate");
    assert!(used.contains_key(&node.secret_name), "the pods mount {}", node.secret_name);
    let usages = node.usages.clone().unwrap();
    assert!(usages.contains(&"server auth".into()) && usages.contains(&"client auth".into()));
    assert!(
        hours(node.renew_before.as_deref().unwrap()) < hours(node.duration.as_deref().unwrap())
    );
    assert_eq!(node.issuer_ref.kind, "Issuer");
    let ca_secret =
        issuers[&node.issuer_ref.name].ca.as_ref().expect("a CA issuer").secret_name.clone();
    let ca = certificates.values().find(|c| c.secret_name == ca_secret).expect("the CA");
    assert_eq!(ca.is_ca, Some(true));
    assert!(issuers[&ca.issuer_ref.name].self_signed.is_some());

    // Every Secret used, with every key read, comes from a generator or
    // from cert-manager (tls.crt, tls.key and ca.crt); nothing is made
    // that no pod reads.
    let mut provided = generated(&dir().join("secrets/kustomization.yaml"));
    provided.extend(generated(&dir().join("secrets/postgres/kustomization.yaml")));
    let tls = ["tls.crt", "tls.key", "ca.crt"].map(String::from).into();
    provided.insert(node.secret_name.clone(), tls);
    for (name, keys) in &used {
        let have = provided.get(name).unwrap_or_else(|| panic!("nothing provides Secret {name}"));
        assert!(keys.is_subset(have), "{name}: {keys:?} read, {have:?} provided");
    }
    for name in provided.keys() {
        assert!(used.contains_key(name), "Secret {name} is provided but never used");
    }
}
