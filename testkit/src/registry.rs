//! Registries for the image tests: Debian's real `docker-registry` (distribution 2.8) started
//! per test on 127.0.0.1 with a config of its own (never the packaged one), over HTTPS with a
//! test CA, in three modes — anonymous, htpasswd Basic, and Bearer tokens from a small token
//! server here that signs ES256 JWTs carrying an `x5c` chain to that CA; OCI layouts built in
//! Rust (small gzip layers of random bytes, a config, a manifest, optionally an index) and
//! pushed with `skopeo`; and [`Hostile`], a scripted HTTP(S) server that records every request
//! and answers whatever the test says (wrong bytes, endless or trickling bodies, redirects).

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use gateway::config::RegistryConfig;
use gateway::image::digest::Digest;
use gateway::image::oci::{self, Descriptor, Platform};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::upstream::TestCa;

mod hostile;
mod token;

pub use hostile::{Hostile, ReplyBody, Seen, reply, streamed};
use token::TokenServer;

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("random");
    b
}

/// A random lowercase name (repositories, users).
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random_bytes(5)))
}

// ---------------------------------------------------------------------------------------------
// Test images and layouts

/// One blob of a test image.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            media_type: media_type.into(),
            digest: Digest::of(&bytes),
            bytes,
        }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        }
    }
}

/// A single-platform image: gzip layers, a config, an OCI manifest.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub platform: Platform,
}

/// A tar holding one file of `size` random bytes, gzip-compressed at `level` (0: stored).
fn random_layer(size: usize, level: u32) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(
        &mut h,
        format!("data/{}", random_name("f")),
        random_bytes(size).as_slice(),
    )
    .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

impl TestImage {
    /// `layer_sizes.len()` layers of that many random bytes each, for `platform`.
    pub fn random(layer_sizes: &[usize], platform: Platform) -> Self {
        Self::random_at(layer_sizes, platform, 6)
    }

    /// As [`TestImage::random`], with gzip level `level` (0 stores: fast for big images).
    pub fn random_at(layer_sizes: &[usize], platform: Platform, level: u32) -> Self {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for &size in layer_sizes {
            let (gz, diff) = random_layer(size, level);
            layers.push(Blob::new(oci::MEDIA_OCI_LAYER_GZIP, gz));
            diff_ids.push(diff.to_string());
        }
        let config = serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {"Cmd": ["/bin/server"], "Labels": {"test": random_name("l")}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = Blob::new(oci::MEDIA_OCI_CONFIG, serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(
            oci::MEDIA_OCI_MANIFEST,
            serde_json::to_vec(&manifest).unwrap(),
        );
        Self {
            manifest,
            config,
            layers,
            platform,
        }
    }

    pub fn blobs(&self) -> Vec<&Blob> {
        let mut v = vec![&self.manifest, &self.config];
        v.extend(&self.layers);
        v
    }
}

/// An image index over several platforms' images.
#[derive(Debug, Clone)]
pub struct TestIndex {
    pub index: Blob,
    pub images: Vec<TestImage>,
}

impl TestIndex {
    pub fn new(images: Vec<TestImage>) -> Self {
        let manifests: Vec<Descriptor> = images
            .iter()
            .map(|i| Descriptor {
                platform: Some(i.platform.clone()),
                ..i.manifest.descriptor()
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_OCI_INDEX,
            "manifests": manifests,
        });
        Self {
            index: Blob::new(oci::MEDIA_OCI_INDEX, serde_json::to_vec(&index).unwrap()),
            images,
        }
    }

    pub fn blobs(&self) -> Vec<&Blob> {
        let mut v = vec![&self.index];
        for i in &self.images {
            v.extend(i.blobs());
        }
        v
    }
}

/// Another platform than this host's (for an index's other entry).
pub fn other_platform() -> Platform {
    let host = Platform::host();
    Platform {
        architecture: if host.architecture == "s390x" {
            "riscv64"
        } else {
            "s390x"
        }
        .into(),
        os: "linux".into(),
        variant: None,
    }
}

/// Writes an OCI layout at `dir`: `blobs`, and `index.json` naming each `(tag, top)`.
pub fn write_layout(dir: &Path, tops: &[(&str, &Blob)], blobs: &[&Blob]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for b in blobs.iter().chain(tops.iter().map(|(_, b)| b)) {
        std::fs::write(dir.join("blobs/sha256").join(b.digest.hex()), &b.bytes).unwrap();
    }
    let manifests: Vec<Descriptor> = tops
        .iter()
        .map(|(tag, b)| {
            let mut d = b.descriptor();
            d.annotations
                .insert("org.opencontainers.image.ref.name".into(), tag.to_string());
            d
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Packs the layout at `dir` into a tar at `out` (entries in a fixed order, `./` prefixed
/// as `tar -C dir -cf out .` writes them).
pub fn tar_layout(dir: &Path, out: &Path) {
    let mut tar = tar::Builder::new(std::fs::File::create(out).unwrap());
    tar.append_dir("./", dir).unwrap();
    for name in ["oci-layout", "index.json"] {
        tar.append_path_with_name(dir.join(name), format!("./{name}"))
            .unwrap();
    }
    tar.append_dir("./blobs", dir.join("blobs")).unwrap();
    tar.append_dir("./blobs/sha256", dir.join("blobs/sha256"))
        .unwrap();
    let mut names: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join("blobs/sha256").join(&n);
        tar.append_path_with_name(&p, format!("./blobs/sha256/{}", n.to_string_lossy()))
            .unwrap();
    }
    tar.finish().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The real registry

/// How the registry wants clients to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    Basic,
    Bearer,
}

/// A `docker-registry` on 127.0.0.1 over HTTPS, killed and reaped on drop.
#[derive(Debug)]
pub struct Registry {
    pub addr: SocketAddr,
    pub auth: RegistryAuth,
    pub username: String,
    password: String,
    pub ca: TestCa,
    /// The CA's PEM file (a `ca_file`) and a `--dest-cert-dir` for skopeo.
    pub ca_file: PathBuf,
    cert_dir: PathBuf,
    pub storage: PathBuf,
    child: Child,
    token: Option<TokenServer>,
    dir: tempfile::TempDir,
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

impl Registry {
    /// Starts a registry in `auth` mode and waits until it accepts connections.
    pub async fn start(auth: RegistryAuth) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(&["127.0.0.1"]);
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"], false);
        let ca_file = dir.path().join("ca.pem");
        write(&ca_file, &ca.ca_pem);
        let cert_dir = dir.path().join("certs.d");
        std::fs::create_dir(&cert_dir).unwrap();
        write(&cert_dir.join("ca.crt"), &ca.ca_pem);
        write(&dir.path().join("tls.crt"), &cert);
        write(&dir.path().join("tls.key"), &key);
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let username = random_name("u");
        let password = hex::encode(random_bytes(12));
        let port = crate::free_loopback_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let service = random_name("svc");
        let issuer = random_name("iss");
        let mut token = None;
        let auth_block = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic => {
                let htpasswd = dir.path().join("htpasswd");
                write(&htpasswd, htpasswd_line(&username, &password));
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            RegistryAuth::Bearer => {
                let server = TokenServer::start(&ca, &username, &password, &service, &issuer).await;
                let bundle = dir.path().join("token-ca.pem");
                write(&bundle, &ca.ca_pem);
                let block = format!(
                    "auth:\n  token:\n    realm: https://{}/token\n    service: {service}\n    \
                     issuer: {issuer}\n    rootcertbundle: {}\n",
                    server.addr,
                    bundle.display()
                );
                token = Some(server);
                block
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n{auth_block}",
            storage.display(),
            dir.path().join("tls.crt").display(),
            dir.path().join("tls.key").display(),
        );
        let config_file = dir.path().join("config.yml");
        write(&config_file, config);
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run docker-registry (apt-get install docker-registry)");
        let mut me = Self {
            addr,
            auth,
            username,
            password,
            ca,
            ca_file,
            cert_dir,
            storage,
            child,
            token,
            dir,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(me.dir.path().join("registry.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not listen on {addr} within 10 s");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The password (the tests' stand-in for the vault secret).
    pub fn password(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(self.password.clone())
    }

    /// This registry's `[[images.registries]]` entry.
    pub fn config(&self) -> RegistryConfig {
        let mut c = RegistryConfig::anonymous(&self.host());
        c.ca_file = Some(self.ca_file.clone());
        if self.auth != RegistryAuth::Anonymous {
            c.username = Some(self.username.clone());
            c.password_secret = Some("registry-password".into());
        }
        if let Some(t) = &self.token {
            c.token_origins = vec![format!("https://{}", t.addr)];
        }
        c
    }

    /// How many token requests the token server answered with a token.
    pub fn tokens_issued(&self) -> usize {
        self.token.as_ref().map_or(0, |t| *t.issued.lock().unwrap())
    }

    /// `skopeo copy` with this registry's credentials (in an auth file, never in argv).
    pub async fn skopeo(&self, src: &str, dest: &str) {
        let authfile = self.dir.path().join("auth.json");
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        write(
            &authfile,
            serde_json::json!({"auths": {self.host(): {"auth": auth}}}).to_string(),
        );
        let mut cmd = tokio::process::Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--all", "--quiet"]);
        if dest.starts_with("docker://") {
            cmd.arg("--dest-cert-dir").arg(&self.cert_dir);
            cmd.arg("--dest-authfile").arg(&authfile);
        } else {
            cmd.arg("--src-cert-dir").arg(&self.cert_dir);
            cmd.arg("--src-authfile").arg(&authfile);
        }
        let out = cmd
            .args([src, dest])
            .output()
            .await
            .expect("run skopeo (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pushes the layout at `layout` (its image tagged `tag`) to `repo:tag`.
    pub async fn push_layout(&self, layout: &Path, tag: &str, repo: &str) {
        self.skopeo(
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{repo}:{tag}", self.host()),
        )
        .await;
    }

    /// The path of blob `digest` in the registry's own storage (to tamper with it).
    pub fn stored_blob(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An htpasswd line with a bcrypt hash (`htpasswd -iBn`, the password on stdin, not argv).
fn htpasswd_line(user: &str, password: &str) -> String {
    let mut child = Command::new("htpasswd")
        .args(["-iBn", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run htpasswd (apt-get install apache2-utils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "htpasswd: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The token server

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `serve` on `listener`, TLS when `tls` is given, one task per connection.
fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    serve: F,
) -> AbortOnDrop
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ReplyBody>> + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            let serve = serve.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let f = serve(req);
                    async move { Ok::<_, Infallible>(f.await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    }))
}

/// `blobs/` and `tmp/` of a store root hold nothing (what every refusal must leave).
pub fn store_is_empty(root: &Path) -> bool {
    let count = |p: PathBuf| std::fs::read_dir(p).map_or(0, |d| d.count());
    count(root.join("blobs/sha256")) == 0 && count(root.join("tmp")) == 0
}
