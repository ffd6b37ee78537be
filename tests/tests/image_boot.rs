//! The lab VM image (`image/build`) boots and serves: built (or reused when one was built
//! from this same commit), booted under qemu from a throwaway overlay (KVM when
//! `/dev/kvm` exists, TCG otherwise), its serial console in a file, until the first-boot
//! service prints `outpost: ready`; then the controller is fetched through a qemu
//! user-mode port forwarded on 127.0.0.1. That is through SeaBIOS (GRUB i386-pc); the
//! other boot path the image carries, OVMF (GRUB x86_64-efi), is booted until systemd
//! starts the lab's service (the kernel, the root filesystem and the units all found),
//! which keeps the two boots' TCG time within CI's budget.
//!
//! Needs root (image/build keeps the root filesystem's owners), the Debian packages in
//! `.ci/run` (mmdebstrap, qemu-system-x86, qemu-utils, grub-pc-bin, grub-efi-amd64-bin,
//! ovmf, dosfstools, mtools, e2fsprogs, fdisk) and this machine's Debian mirror. Times
//! are printed, never asserted.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_testkit::port::free_tcp_port;
use outpost_testkit::process::Proc;

/// The whole first boot under TCG on a loaded 2-core machine stays well inside this;
/// it only bounds a broken run.
static IMAGE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
static ONE_VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

const BOOT_LIMIT: Duration = Duration::from_secs(20 * 60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn work() -> PathBuf {
    std::env::var_os("OUTPOST_IMAGE_WORK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/outpost-image"))
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(args)
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image, built by `image/build` unless the one in the work directory was built from
/// this commit with a clean tree.
fn image() -> PathBuf {
    let out = work().join("out");
    let qcow2 = out.join("outpost-lab.qcow2");
    let head = git(&["rev-parse", "HEAD"]);
    let clean = git(&["status", "--porcelain"]).is_empty();
    let built = std::fs::read_to_string(out.join("outpost-lab.commit")).unwrap_or_default();
    if clean && built.trim() == head && qcow2.exists() {
        println!("reusing {} (built from {head})", qcow2.display());
        return qcow2;
    }
    let t0 = Instant::now();
    let status = Command::new(repo().join("image/build"))
        .status()
        .expect("image/build runs");
    assert!(status.success(), "image/build failed: {status}");
    println!("image/build took {:?}", t0.elapsed());
    qcow2
}

/// qemu with its serial console in a file; killed, and its overlay removed, when dropped
/// (a failing test too).
struct Vm {
    qemu: Proc,
    serial: PathBuf,
    _dir: tempfile::TempDir,
    port: u16,
    /// This VM's turn (one at a time: 2 CPUs each, on a small machine); dropped last.
    _turn: std::sync::MutexGuard<'static, ()>,
}

#[derive(Clone, Copy, Debug)]
enum Firmware {
    Bios,
    Efi,
}

impl Vm {
    fn boot(image: &Path, firmware: Firmware) -> Vm {
        let turn = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(image)
            .arg(&overlay)
            .status()
            .expect("qemu-img runs (Debian package qemu-utils)");
        assert!(st.success());
        let serial = dir.path().join("serial.log");
        let port = free_tcp_port();
        let (kvm, why) = accelerator();
        println!("booting {firmware:?} under {why}");
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-m", "2048", "-smp", "2", "-display", "none", "-no-reboot"])
            .args([
                "-machine",
                if kvm {
                    "q35,accel=kvm"
                } else {
                    "q35,accel=tcg"
                },
            ])
            .args(["-cpu", if kvm { "host" } else { "max" }])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .args(["-netdev"])
            .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8080"))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .args(["-monitor", "none"])
            .stdin(Stdio::null());
        if let Firmware::Efi = firmware {
            // OVMF's code read-only, its variables a copy of the template per boot.
            let vars = dir.path().join("OVMF_VARS.fd");
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
                .expect("OVMF_VARS_4M.fd (Debian package ovmf)");
            qemu.arg("-drive")
                .arg("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd")
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        let child = qemu
            .spawn()
            .expect("qemu-system-x86_64 runs (Debian package qemu-system-x86)");
        Vm {
            qemu: Proc(child),
            serial,
            _dir: dir,
            port,
            _turn: turn,
        }
    }

    fn console(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.serial) {
            let _ = f.seek(SeekFrom::Start(0));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    /// Waits for a console line starting with `want` (from its `outpost: `); fails on the
    /// first-boot service's FAILED line, on qemu exiting, or past [`BOOT_LIMIT`]. The
    /// console's `outpost:` lines are printed.
    fn wait_for(&mut self, want: &str) -> Duration {
        let t0 = Instant::now();
        let mut shown = 0;
        loop {
            let console = self.console();
            // A login prompt or a kernel message may share the line.
            let lines: Vec<&str> = console
                .lines()
                .filter_map(|l| l.find("outpost: ").map(|i| &l[i..]))
                .collect();
            for l in &lines[shown..] {
                println!("  [{:>5.1}s] {l}", t0.elapsed().as_secs_f64());
            }
            shown = lines.len();
            if lines.iter().any(|l| l.starts_with(want)) {
                return t0.elapsed();
            }
            let failed = lines.iter().any(|l| l.starts_with("outpost: FAILED"));
            let exited = matches!(self.qemu.0.try_wait(), Ok(Some(_)));
            if failed || exited || t0.elapsed() > BOOT_LIMIT {
                let tail: Vec<&str> = console.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "no {want:?} line (failed: {failed}, qemu exited: {exited}, after {:?}); the console's end:\n{}",
                    t0.elapsed(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap_or_else(|e| panic!("GET {path} through the forwarded port: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }
}

fn boot(firmware: Firmware) -> Vm {
    assert!(
        is_root(),
        "image/build needs root (the root filesystem keeps its owners)"
    );
    // One build for both tests.
    let image = IMAGE.get_or_init(image);
    Vm::boot(image, firmware)
}

fn boots_to_ready_and_serves(firmware: Firmware) {
    let mut vm = boot(firmware);
    let took = vm.wait_for("outpost: ready");
    println!("{firmware:?}: boot to ready (first boot, demo cycle included) in {took:?}");
    let console = vm.console();
    for line in [
        "outpost: demo: amina",
        "outpost: demo: bruno suspended",
        "outpost: demo: bruno active again",
    ] {
        assert!(console.contains(line), "no {line:?} on the console");
    }
    // Ready: migrations done, the database answers, every listener bound.
    let (status, body) = vm.get("/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = vm.get("/panel/login");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("type=\"password\""),
        "the login page has no password field"
    );
    println!(
        "{firmware:?}: /readyz and /panel/login answer through 127.0.0.1:{}",
        vm.port
    );
}

/// KVM when `/dev/kvm` is there and is the hardware-assisted kind. Under PVM (the
/// `kvm_pvm` module: KVM without hardware virtualisation, in some cloud sandboxes) only
/// PVM-enabled guest kernels run; Debian's stock kernel image never gets past GRUB's
/// decompressor there, so such a machine boots the image with TCG.
fn accelerator() -> (bool, &'static str) {
    if !Path::new("/dev/kvm").exists() {
        (false, "TCG (no /dev/kvm)")
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        (
            false,
            "TCG (/dev/kvm is PVM, which runs only PVM-enabled guest kernels)",
        )
    } else {
        (true, "KVM")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
#[ignore = "image: needs root, qemu and Debian's package mirror"]
fn the_image_boots_with_bios_and_serves() {
    boots_to_ready_and_serves(Firmware::Bios);
}

#[test]
#[ignore = "image: needs root, qemu and Debian's package mirror"]
fn the_image_boots_with_efi_to_the_lab_service() {
    let mut vm = boot(Firmware::Efi);
    let took = vm.wait_for("outpost: starting the lab");
    println!("Efi: boot to the lab service's start in {took:?}");
}
