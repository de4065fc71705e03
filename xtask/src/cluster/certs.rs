//! Credentials for a throwaway control plane, made with the openssl CLI.
//!
//! One CA signs a loopback serving certificate (shared by the API server,
//! controller-manager and scheduler) and one client certificate per component;
//! the user and group in each certificate's subject is what RBAC sees. A
//! separate RSA key signs ServiceAccount tokens. Everything is ECDSA P-256
//! (fast to generate) except that key, and nothing is valid beyond loopback.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// ClusterIP range; its first address is the `kubernetes` Service's, which the
/// serving certificate must name. Nothing routes to it: Services are not reachable here.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_private: PathBuf,
    pub sa_public: PathBuf,
    pub controller_manager_kubeconfig: PathBuf,
    pub scheduler_kubeconfig: PathBuf,
    pub kwok_kubeconfig: PathBuf,
}

/// Writes `<state>/pki/*`, the component kubeconfigs and the admin kubeconfig
/// `<state>/kubeconfig` for an API server on `127.0.0.1:<apiserver_port>`.
pub fn generate(state: &Path, apiserver_port: u16) -> Result<Pki> {
    let pki = state.join("pki");
    fs::create_dir_all(&pki)?;
    let file = |name: &str| pki.join(name);

    let ca = Subject {
        cn: "atoll-testenv-ca",
        o: None,
    };
    openssl_cert(
        &pki,
        "ca",
        &ca,
        "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign",
        None,
    )?;

    let sans = format!(
        "IP:127.0.0.1, DNS:localhost, IP:{KUBERNETES_SERVICE_IP}, DNS:kubernetes, DNS:kubernetes.default, \
         DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local"
    );
    openssl_cert(
        &pki,
        "serving",
        &Subject {
            cn: "kube-apiserver",
            o: None,
        },
        &format!("{LEAF}\nextendedKeyUsage = serverAuth\nsubjectAltName = {sans}"),
        Some(&pki),
    )?;

    // Users as RBAC knows them: the bootstrap ClusterRoleBindings grant the
    // controller-manager and scheduler exactly their own names.
    let clients = [
        (
            "admin",
            Subject {
                cn: "atoll-admin",
                o: Some("system:masters"),
            },
        ),
        (
            "controller-manager",
            Subject {
                cn: "system:kube-controller-manager",
                o: None,
            },
        ),
        (
            "scheduler",
            Subject {
                cn: "system:kube-scheduler",
                o: None,
            },
        ),
        // kwok rewrites status of every Node and Pod it manages; no narrower role fits.
        (
            "kwok",
            Subject {
                cn: "kwok-controller",
                o: Some("system:masters"),
            },
        ),
    ];
    let server = format!("https://127.0.0.1:{apiserver_port}");
    for (name, subject) in &clients {
        openssl_cert(
            &pki,
            name,
            subject,
            &format!("{LEAF}\nextendedKeyUsage = clientAuth"),
            Some(&pki),
        )?;
        let path = if *name == "admin" {
            state.join("kubeconfig")
        } else {
            file(&format!("{name}.kubeconfig"))
        };
        write_kubeconfig(
            &path,
            &server,
            &file("ca.crt"),
            &file(&format!("{name}.crt")),
            &file(&format!("{name}.key")),
        )?;
    }

    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        &file("sa.key"),
    )?;
    openssl(
        &[
            "pkey",
            "-pubout",
            "-in",
            &file("sa.key").display().to_string(),
            "-out",
        ],
        &file("sa.pub"),
    )?;

    Ok(Pki {
        ca_cert: file("ca.crt"),
        ca_key: file("ca.key"),
        serving_cert: file("serving.crt"),
        serving_key: file("serving.key"),
        sa_private: file("sa.key"),
        sa_public: file("sa.pub"),
        controller_manager_kubeconfig: file("controller-manager.kubeconfig"),
        scheduler_kubeconfig: file("scheduler.kubeconfig"),
        kwok_kubeconfig: file("kwok.kubeconfig"),
    })
}

const LEAF: &str =
    "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment";

struct Subject<'a> {
    cn: &'a str,
    /// Organisation: Kubernetes reads it as the user's group.
    o: Option<&'a str>,
}

/// Creates `<dir>/<name>.key` and `<dir>/<name>.crt`: self-signed when
/// `ca_dir` is None, else signed by `<ca_dir>/ca.{crt,key}`.
fn openssl_cert(
    dir: &Path,
    name: &str,
    subject: &Subject,
    extensions: &str,
    ca_dir: Option<&Path>,
) -> Result<()> {
    // A config file per certificate: `-addext` would clash with the
    // extensions the system openssl.cnf adds by default.
    let cnf = dir.join(format!("{name}.cnf"));
    let org = subject.o.map(|o| format!("O = {o}\n")).unwrap_or_default();
    fs::write(
        &cnf,
        format!(
            "[req]\nprompt = no\ndistinguished_name = dn\n[dn]\n{org}CN = {}\n[ext]\n{extensions}\n\
             subjectKeyIdentifier = hash\n",
            subject.cn
        ),
    )?;
    let key = dir.join(format!("{name}.key"));
    let mut args: Vec<String> = [
        "req",
        "-x509",
        "-new",
        "-noenc",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-days",
        "3650",
        "-extensions",
        "ext",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "-config".into(),
        cnf.display().to_string(),
        "-keyout".into(),
        key.display().to_string(),
    ]);
    if let Some(ca) = ca_dir {
        args.extend([
            "-CA".into(),
            ca.join("ca.crt").display().to_string(),
            "-CAkey".into(),
            ca.join("ca.key").display().to_string(),
        ]);
    }
    args.push("-out".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(&args, &dir.join(format!("{name}.crt")))
}

/// Runs `openssl <args> <out>`; the output path comes last so callers end their
/// argument list with the flag that names it.
fn openssl(args: &[&str], out: &Path) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .arg(out)
        .output()
        .context("running openssl (install the openssl CLI)")?;
    anyhow::ensure!(
        output.status.success(),
        "openssl {} {} failed: {}",
        args.join(" "),
        out.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    // Paths, not embedded data: the files live beside it and vanish together on `down`.
    let text = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: atoll-testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: atoll-testenv
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: atoll-testenv
  context:
    cluster: atoll-testenv
    user: atoll-testenv
current-context: atoll-testenv
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
