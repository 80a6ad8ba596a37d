//! The container image without Docker: the tags it is built from follow
//! their publishers' schemes, and the Dockerfile, played step by step on
//! this machine, gives a binary that serves, passes its health check and
//! drains as uid 65532 in a root filesystem holding nothing but the binary
//! and the libraries distroless `cc` ships.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::dockerfile::{
    DockerIgnore, Dockerfile, Stage, command_line, env_pairs, exec_form, glob,
};
use common::{DEADLINE, Process, get, read_repo_file};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dockerfile() -> Dockerfile {
    Dockerfile::parse(&read_repo_file("Dockerfile"))
}

/// The channel in rust-toolchain.toml, e.g. "1.95.0".
fn toolchain_channel() -> String {
    let file: toml::Table = toml::from_str(&read_repo_file("rust-toolchain.toml")).unwrap();
    file["toolchain"]["channel"]
        .as_str()
        .expect("toolchain.channel")
        .to_owned()
}

/// Debian's release numbers by suite name, for the suites the official rust
/// image is published on (rust-lang/docker-rust x.py, `debian_releases`).
const DEBIAN: [(&str, u32); 3] = [("bullseye", 11), ("bookworm", 12), ("trixie", 13)];

/// distroless images still supported: debian12 ended in Sept 2026
/// (SUPPORT_POLICY.md in GoogleContainerTools/distroless).
const DISTROLESS_SUPPORTED: [u32; 1] = [13];

fn arg_value(stage: &Stage, globals: &[(String, String)], name: &str) -> String {
    stage
        .args()
        .into_iter()
        .chain(globals.iter().cloned())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no ARG {name}"))
}

#[test]
fn every_base_image_is_a_tag_its_publisher_produces() {
    let file = dockerfile();
    let bases = file.external_bases();
    assert_eq!(bases.len(), 2, "a builder and a runtime: {bases:?}");

    // Builder: rust:<version>-slim-<suite>, the version being the toolchain's.
    let builder = bases[0];
    let (image, tag) = builder.base.split_once(':').expect("a tagged FROM");
    assert_eq!(image, "rust", "the official Rust image");
    let (version, suite) = tag
        .split_once("-slim-")
        .unwrap_or_else(|| panic!("rust:{tag} is not <version>-slim-<suite>"));
    assert_eq!(
        version,
        toolchain_channel(),
        "rust:{tag} must carry rust-toolchain.toml's release"
    );
    let builder_debian = DEBIAN
        .iter()
        .find(|(name, _)| *name == suite)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("{suite} is not a suite rust images are published on"));
    assert!(
        builder.comment.contains("github.com/rust-lang/docker-rust"),
        "the comment above FROM {} must say where its tag scheme is written",
        builder.base
    );

    // Runtime: gcr.io/distroless/cc-debian<N>:nonroot, on the builder's
    // Debian release so the binary runs on the glibc it was linked against.
    let runtime = bases[1];
    let rest = runtime
        .base
        .strip_prefix("gcr.io/distroless/cc-debian")
        .unwrap_or_else(|| panic!("{} is not distroless cc", runtime.base));
    let (release, tag) = rest.split_once(':').expect("a tagged runtime");
    let release: u32 = release.parse().unwrap();
    assert_eq!(tag, "nonroot", "distroless's non-root tag");
    assert_eq!(
        release, builder_debian,
        "builder on Debian {builder_debian}, runtime on Debian {release}"
    );
    assert!(
        DISTROLESS_SUPPORTED.contains(&release),
        "distroless cc-debian{release} is past its support (SUPPORT_POLICY.md)"
    );
    assert!(
        runtime
            .comment
            .contains("github.com/GoogleContainerTools/distroless"),
        "the comment above FROM {} must say where it is published",
        runtime.base
    );
    assert_eq!(runtime.name.as_deref(), Some("runtime"));

    // cargo-chef from crates.io at one exact release (the played build below
    // installs it, which proves that the release exists).
    let chef = file.stage("chef");
    let pinned = arg_value(chef, &file.global_args, "CARGO_CHEF_VERSION");
    let parts: Vec<&str> = pinned.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "CARGO_CHEF_VERSION {pinned:?} must be an exact release"
    );
    assert!(
        chef.instructions.iter().any(|i| i.keyword == "RUN"
            && i.args
                .contains("cargo install --locked cargo-chef --version")
            && i.args.contains("CARGO_CHEF_VERSION")),
        "the chef stage installs the pinned cargo-chef from crates.io"
    );
}

#[test]
fn dockerignore_patterns_match_as_docker_matches_them() {
    let ignore = DockerIgnore::parse(
        "# c\ntarget/\n**/target/\n.env\n.env.*\n**/*.log\n/deploy/\n*.md\n!README.md\n",
    );
    for path in [
        "target/release/x",
        "bench/target/debug/x",
        ".env",
        ".env.local",
        "a/b/c.log",
        "x.log",
        "deploy/k8s/a.yaml",
        "NOTES.md",
    ] {
        assert!(ignore.excludes(path), "{path} should be excluded");
    }
    for path in [
        "src/main.rs",
        "Cargo.toml",
        "README.md",
        "src/deploy/x.rs",
        "env",
        "src/notes.md",
    ] {
        assert!(!ignore.excludes(path), "{path} should be sent");
    }
    assert!(glob(b"a?c", b"abc") && !glob(b"a?c", b"a/c"));
}

#[test]
fn the_build_context_holds_what_cargo_needs_and_nothing_secret() {
    let ignore = DockerIgnore::parse(&read_repo_file(".dockerignore"));
    for needed in ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"] {
        assert!(!ignore.excludes(needed), "the build needs {needed}");
    }
    for secret in [
        ".env",
        ".env.production",
        "target/release/portbound",
        ".git/config",
    ] {
        assert!(
            ignore.excludes(secret),
            "{secret} must stay out of the context"
        );
    }
}

// ---------------------------------------------------------------------------
// The Dockerfile, played
// ---------------------------------------------------------------------------

/// Shared objects the distroless `cc` image provides, by file name: glibc
/// (libc6), libgcc-s1, libstdc++6 and libgomp1 from `cc`, and libssl3t64,
/// zlib1g and libzstd1 from `base` (cc/config.bzl and base/config.bzl for
/// debian13 in GoogleContainerTools/distroless).
const DISTROLESS_CC_LIBS: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libresolv.so.2",
    "libanl.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libgomp.so.1",
    "libssl.so.3",
    "libcrypto.so.3",
    "libz.so.1",
    "libzstd.so.1",
];

/// Where the played build keeps its stages: outside the repository, so
/// rustup does not find the repository's rust-toolchain.toml above them
/// (the image's context leaves it out), and kept between runs, the way
/// Docker keeps its layer cache.
fn play_dir() -> PathBuf {
    let key: u64 = env!("CARGO_MANIFEST_DIR")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    std::env::temp_dir().join(format!("portbound-image-play-{key:x}"))
}

/// A stage's filesystem: a directory standing in for its `/`.
struct StageRoot {
    root: PathBuf,
    workdir: String,
    env: Vec<(String, String)>,
}

impl StageRoot {
    fn path(&self, p: &str) -> PathBuf {
        let abs = if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("{}/{p}", self.workdir.trim_end_matches('/'))
        };
        self.root.join(abs.trim_start_matches('/'))
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// Empties a stage's root but for `app/target`: build output that Docker's
/// layer cache would keep too.
fn fresh_stage_root(root: &Path) {
    let clear_except = |dir: &Path, keep: &str| {
        std::fs::create_dir_all(dir).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_name() == keep {
                continue;
            } else if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    };
    clear_except(root, "app");
    clear_except(&root.join("app"), "target");
}

/// Plays every stage but the last: WORKDIR, ARG (its default, or the value
/// in `build_args`, as `--build-arg` gives it), ENV, COPY (from the
/// filtered context or an earlier stage) and RUN, each RUN through `sh -c`
/// in the stage's working directory, as written.
fn play_build_stages(
    file: &Dockerfile,
    context: &Path,
    dir: &Path,
    build_args: &[(String, String)],
) -> Vec<(String, StageRoot)> {
    let mut played: Vec<(String, StageRoot)> = Vec::new();
    let build_stages = &file.stages[..file.stages.len() - 1];
    for stage in build_stages {
        let name = stage.name.clone().expect("every build stage is named");
        let root = dir.join(&name);
        let mut state = match played.iter().find(|(n, _)| *n == stage.base) {
            // FROM an earlier stage: start from its files and settings.
            Some((_, parent)) => {
                fresh_stage_root(&root);
                let parent_app = parent.path(&parent.workdir);
                if parent_app.exists() {
                    copy_tree(
                        &parent_app,
                        &root.join(parent.workdir.trim_start_matches('/')),
                    );
                }
                StageRoot {
                    root: root.clone(),
                    workdir: parent.workdir.clone(),
                    env: parent.env.clone(),
                }
            }
            // FROM an image: this machine's toolchain stands in for it.
            None => {
                fresh_stage_root(&root);
                StageRoot {
                    root: root.clone(),
                    workdir: "/".into(),
                    env: Vec::new(),
                }
            }
        };
        for i in &stage.instructions {
            match i.keyword.as_str() {
                "WORKDIR" => {
                    state.workdir = i.args.clone();
                    std::fs::create_dir_all(state.path(&i.args)).unwrap();
                }
                "ARG" => {
                    let (k, _) = i.args.split_once('=').unwrap_or((&i.args, ""));
                    let v = match build_args.iter().find(|(name, _)| name == k) {
                        Some((_, v)) => v.clone(),
                        None => arg_value(stage, &file.global_args, k),
                    };
                    state.env.push((k.to_owned(), v));
                }
                "ENV" => state.env.extend(env_pairs(&i.args)),
                "COPY" => {
                    let words: Vec<&str> = i.args.split_whitespace().collect();
                    let (from, paths) = match words.split_first() {
                        Some((flag, rest)) if flag.starts_with("--from=") => {
                            (Some(&flag["--from=".len()..]), rest)
                        }
                        _ => (None, &words[..]),
                    };
                    let (dest, sources) = paths.split_last().expect("COPY src dest");
                    for src in sources {
                        let source = match from {
                            Some(stage) => {
                                let (_, s) = played
                                    .iter()
                                    .find(|(n, _)| n == stage)
                                    .unwrap_or_else(|| panic!("COPY --from={stage}"));
                                s.path(src)
                            }
                            None => context.join(src),
                        };
                        let target = state.path(dest);
                        if source.is_dir() {
                            // `COPY dir dest` copies the directory's contents.
                            copy_tree(&source, &target);
                        } else if dest.ends_with('/') || target.is_dir() {
                            copy_tree(&source, &target.join(source.file_name().unwrap()));
                        } else {
                            copy_tree(&source, &target);
                        }
                    }
                }
                "RUN" => {
                    assert!(
                        !i.args.starts_with('['),
                        "RUN {}: the played build runs shell-form RUN",
                        i.args
                    );
                    let cwd = state.path(&state.workdir);
                    std::fs::create_dir_all(&cwd).unwrap();
                    println!("[{name}] RUN {}", i.args);
                    let status = Command::new("sh")
                        .arg("-c")
                        .arg(&i.args)
                        .current_dir(&cwd)
                        .envs(state.env.iter().map(|(k, v)| (k, v)))
                        .status()
                        .expect("run sh");
                    assert!(status.success(), "[{name}] RUN {} failed: {status}", i.args);
                }
                other => panic!("[{name}] {other} is not played; teach the test"),
            }
        }
        played.push((name, state));
    }
    played
}

/// The shared objects `ldd` says the binary loads: (path, file name).
fn shared_libraries(binary: &Path) -> Vec<(PathBuf, String)> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd {}", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| {
                let p = PathBuf::from(path);
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (p, name)
            })
        })
        .collect()
}

/// One play at a time: the plays share their stages' directories (and
/// the build output kept in them, as Docker's layer cache).
static PLAYING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The build context, exactly as .dockerignore lets Docker send it: its
/// directory and the paths in it.
fn play_context(dir: &Path) -> (PathBuf, BTreeSet<String>) {
    let context = dir.join("context");
    if context.exists() {
        std::fs::remove_dir_all(&context).unwrap();
    }
    let ignore = DockerIgnore::parse(&read_repo_file(".dockerignore"));
    let sent = ignore
        .copy_context(&repo(""), &context)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    (context, sent)
}

/// docker-compose.yml builds auth's image with build arguments: played
/// with them, the builder makes the auth example, with the features they
/// name, where the runtime stage takes its program from.
#[test]
#[ignore = "needs crates.io and a release build of the image's stages: run by .ci/run"]
fn the_dockerfile_played_with_composes_build_args_builds_that_example() {
    let compose = common::compose::file();
    // `args:` is a map of NAME: value, as `environment:` is.
    let args = common::compose::env(&compose["services"]["auth"]["build"]["args"]);
    assert!(
        args.iter()
            .any(|(k, v)| k == "PORTBOUND_EXAMPLE" && v == "auth"),
        "{args:?}"
    );
    let _one = PLAYING.lock().unwrap_or_else(|e| e.into_inner());
    let file = dockerfile();
    let dir = play_dir();
    let (context, _) = play_context(&dir);
    let played = play_build_stages(&file, &context, &dir, &args);

    // The program the runtime stage copies.
    let copy = file
        .image()
        .instructions
        .iter()
        .find(|i| i.keyword == "COPY")
        .expect("the runtime stage copies the program");
    let words: Vec<&str> = copy.args.split_whitespace().collect();
    let (_, builder) = played
        .iter()
        .find(|(n, _)| Some(n.as_str()) == words[0].strip_prefix("--from="))
        .unwrap();
    let program = builder.path(words[1]);

    // It is auth, with traces: it verifies a token, and says where its
    // spans go (a build without `otel` would warn that it cannot).
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let scratch = common::scratch_dir("image-auth");
    let auth = common::spawn_program(
        &program,
        &[],
        &[
            ("AUTH_TOKENS", "t0ken=alice"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead),
        ],
        &scratch,
    );
    auth.wait_for_log("traces: exported over OTLP to");
    let res = common::request(
        auth.addr(),
        "POST",
        "/api/v1/verify",
        &[("Content-Type", "application/json")],
        br#"{"token":"t0ken"}"#,
    );
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains("alice"), "{}", res.text());
}

#[test]
#[ignore = "needs root (chroot), crates.io and a release build of the image's stages: run by .ci/run"]
fn the_dockerfile_played_serves_passes_its_healthcheck_and_drains_as_65532_in_an_empty_root() {
    let _one = PLAYING.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
        "chroot needs root"
    );
    let file = dockerfile();
    let dir = play_dir();

    let (context, sent) = play_context(&dir);
    assert!(sent.contains("Cargo.lock") && sent.contains("src/main.rs"));
    assert!(
        !sent.iter().any(|p| p.starts_with("target/") || p == ".env"),
        "{sent:?}"
    );

    let played = play_build_stages(&file, &context, &dir, &[]);

    // The runtime stage: an empty root filesystem, what its COPY brings,
    // and the shared libraries distroless cc provides. Nothing else: no
    // shell, no /etc, no /tmp.
    let image = file.image();
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs).unwrap();
    }
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut binary_in_image = None;
    for i in &image.instructions {
        match i.keyword.as_str() {
            "COPY" => {
                let words: Vec<&str> = i.args.split_whitespace().collect();
                let [flag, src, dest] = words[..] else {
                    panic!("COPY {}: expected --from=stage src dest", i.args)
                };
                let stage = flag.strip_prefix("--from=").expect("COPY --from");
                let (_, from) = played.iter().find(|(n, _)| n == stage).unwrap();
                copy_tree(&from.path(src), &rootfs.join(dest.trim_start_matches('/')));
                binary_in_image = Some(dest.to_owned());
            }
            "ENV" | "EXPOSE" | "USER" | "STOPSIGNAL" | "HEALTHCHECK" | "ENTRYPOINT" | "CMD" => {}
            other => panic!("the runtime stage has {other}; distroless has no shell to RUN it"),
        }
    }
    let binary_in_image = binary_in_image.expect("the runtime stage copies the binary");
    let binary = rootfs.join(binary_in_image.trim_start_matches('/'));
    let libraries = shared_libraries(&binary);
    let foreign: Vec<&String> = libraries
        .iter()
        .map(|(_, name)| name)
        .filter(|name| !DISTROLESS_CC_LIBS.contains(&name.as_str()))
        .collect();
    assert!(
        foreign.is_empty(),
        "the binary loads libraries distroless cc does not have: {foreign:?}"
    );
    for (path, _) in &libraries {
        // The file itself, under the name the loader asks for.
        let target = rootfs.join(path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(path, &target).unwrap();
    }

    // Run it as the runtime stage says: USER, ENV, ENTRYPOINT + CMD. PORT is
    // set the way a platform injects it, to a free port, so tests can run
    // side by side.
    let user = image.last("USER").expect("USER");
    assert_eq!(user, "65532:65532");
    let argv = command_line(image);
    assert_eq!(argv[0], binary_in_image);
    let port = common::free_port().to_string();
    let mut env = image.env();
    env.retain(|(k, _)| k != "PORT");
    env.push(("PORT".into(), port.clone()));
    // By path: the child's environment is the image's, with no PATH.
    let chroot_bin = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot (coreutils)");
    let chroot = |args: &[String]| {
        let mut cmd = Command::new(chroot_bin);
        cmd.arg(format!("--userspec={user}"))
            .arg(&rootfs)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd
    };
    let child = chroot(&argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chroot");
    let mut server = Process::from_child(child);
    assert_eq!(server.port().to_string(), port, "{}", server.stdout());
    let root = get(server.addr(), "/");
    assert_eq!(root.status, 200, "{}", root.text());

    // The process runs as 65532, not root.
    let pid = server.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65532"),
        "{uid_line}"
    );

    // HEALTHCHECK, in the same root with the same environment.
    let check = image.last("HEALTHCHECK").expect("HEALTHCHECK");
    let (_, cmd) = check.split_once("CMD").expect("HEALTHCHECK CMD");
    let check = exec_form("HEALTHCHECK CMD", cmd.trim());
    let out = chroot(&check).output().expect("healthcheck");
    assert!(
        out.status.success(),
        "{check:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // STOPSIGNAL drains and exits 0.
    let signal = image.last("STOPSIGNAL").expect("STOPSIGNAL");
    server.signal(signal.trim_start_matches("SIG"));
    let (exit, _) = server.wait_exit(DEADLINE + Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "{}", server.stdout());
    server.wait_for_log("drain complete");
}
