//! The desktop window end to end: a real `tritium gui` under Xvfb on the
//! software Vulkan driver, driven with xdotool like a person would. It starts
//! with a missing model (the window must say so and stay usable), loads a good
//! one through the Ctrl+O folder field, sends a message with Enter, waits for
//! the streamed reply, quits with Ctrl+Q, and checks the saved transcript
//! against `tritium generate` run greedily on the same chat.
//!
//! Needs the Debian packages xvfb, xdotool and imagemagick (`scripts/test.sh`
//! installs them). Screenshots go to `$TRITIUM_ARTIFACTS` (default:
//! `<target>/artifacts`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{artifacts, fixture, tritium_ok, KillOnDrop};
use tritium::gui::transcript::Transcript;

const PROMPT: &str = "Name three colours.";
const MAX_TOKENS: &str = "12";

fn need(tool: &str, package: &str) {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    assert!(found, "the window test needs `{tool}`: apt-get install {package} (scripts/test.sh does it)");
}

fn run(cmd: &str, args: &[&str], display: &str) -> String {
    let out = Command::new(cmd).args(args).env("DISPLAY", display).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running Xvfb, stopped with SIGTERM when dropped so that it removes its
/// lock file and socket (a killed server leaves them behind).
struct Xvfb(std::process::Child);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Xvfb on a display number it picks itself (`-displayfd`): it skips
/// displays held by a live server, clears stale locks, and writes the number
/// once it accepts connections.
fn start_xvfb() -> (Xvfb, String) {
    let mut child = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Xvfb");
    let stdout = child.stdout.take().expect("Xvfb's stdout");
    let xvfb = Xvfb(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read Xvfb's display number");
    let n: u32 = line.trim().parse().unwrap_or_else(|_| panic!("Xvfb did not report a display number ({line:?})"));
    (xvfb, format!(":{n}"))
}

/// Waits until the window prints a line containing one of `needles`; returns that line.
fn wait_for_line(lines: &mpsc::Receiver<String>, needles: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if needles.iter().any(|n| line.contains(n)) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("the window never printed any of {needles:?}; it printed:\n{}", seen.join("\n"));
}

fn screenshot(window: &str, display: &str, name: &str) {
    let path = artifacts().join(name);
    run("import", &["-window", window, path.to_str().unwrap()], display);
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn chat_in_the_window_matches_greedy_generate() {
    for (tool, package) in [("Xvfb", "xvfb"), ("xdotool", "xdotool"), ("import", "imagemagick")] {
        need(tool, package);
    }
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("tiny");
    let m = model.to_str().unwrap();
    let tokenizer = fixture("qwen2.5-tokenizer");
    tritium_ok(&["synth", "--shape", "tiny", "--output", m, "--seed", "5", "--tokenizer", tokenizer.to_str().unwrap()]);
    let transcript_path = work.path().join("chat.json");
    let missing = work.path().join("no-such-model");

    let (_xvfb, display) = start_xvfb();
    let mut gui = Command::new(env!("CARGO_BIN_EXE_tritium"))
        .args(["gui", "--model", missing.to_str().unwrap(), "--temperature", "0", "--max-tokens", MAX_TOKENS])
        .arg("--save-transcript")
        .arg(&transcript_path)
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tritium gui");
    let stderr = gui.stderr.take().unwrap();
    let mut gui = KillOnDrop(gui);
    let (line_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[gui] {line}");
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });

    // A missing model: the window opens anyway and says what is wrong.
    let failed = wait_for_line(&lines, &["could not load", "panicked"], Duration::from_secs(120));
    assert!(failed.contains("no-such-model") && !failed.contains("panicked"), "{failed}");
    let window = run("xdotool", &["search", "--sync", "--onlyvisible", "--name", "^Tritium$"], &display);
    let window = window.lines().next().expect("a window id").to_string();
    run("xdotool", &["windowfocus", "--sync", &window], &display);
    std::thread::sleep(Duration::from_secs(2));
    screenshot(&window, &display, "gui-missing-model.png");

    // Load the good model without restarting: Ctrl+O, type the folder, Enter.
    run("xdotool", &["key", "--window", &window, "ctrl+o"], &display);
    std::thread::sleep(Duration::from_millis(800));
    run("xdotool", &["key", "ctrl+a"], &display);
    run("xdotool", &["type", "--delay", "15", m], &display);
    run("xdotool", &["key", "Return"], &display);
    let loaded = wait_for_line(&lines, &["loaded ", "could not load", "panicked"], Duration::from_secs(300));
    assert!(loaded.starts_with("loaded ") && loaded.contains("tiny"), "{loaded}");

    // Send a message with Enter and wait for the reply to land in the transcript.
    std::thread::sleep(Duration::from_millis(500));
    run("xdotool", &["type", "--delay", "15", PROMPT], &display);
    run("xdotool", &["key", "Return"], &display);
    let deadline = Instant::now() + Duration::from_secs(300);
    let saved = loop {
        if let Ok(t) = Transcript::load(&transcript_path) {
            if t.turns.len() == 2 {
                break t;
            }
        }
        assert!(Instant::now() < deadline, "no reply saved to {}", transcript_path.display());
        std::thread::sleep(Duration::from_millis(250));
    };
    std::thread::sleep(Duration::from_secs(1));
    screenshot(&window, &display, "gui-window.png");

    // Ctrl+Q closes the window; the transcript is written once more on the way out.
    run("xdotool", &["key", "--window", &window, "ctrl+q"], &display);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = gui.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the window did not close after Ctrl+Q");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "tritium gui exited with {status}");
    let closed = Transcript::load(&transcript_path).unwrap();
    assert_eq!(closed.turns, saved.turns);
    assert_eq!(closed.model.as_deref(), Some(model.as_path()));

    let (user, reply) = (&closed.turns[0], &closed.turns[1]);
    assert_eq!((user.role.as_str(), user.content.as_str()), ("user", PROMPT));
    assert_eq!(reply.role, "assistant");
    let cli = tritium_ok(&[
        "generate",
        "--model",
        m,
        "--prompt",
        PROMPT,
        "--chat",
        "--temperature",
        "0",
        "--max-tokens",
        MAX_TOKENS,
        "--print-ids",
    ]);
    let (text, ids) = cli.stdout.trim_end().rsplit_once('\n').expect("text, then the ids line");
    let ids: Vec<u32> = ids.split(',').map(|s| s.parse().unwrap()).collect();
    assert_eq!(reply.ids, ids, "the window's reply ids differ from greedy generate");
    assert_eq!(reply.content, text.trim_end(), "the window's reply text differs from greedy generate");
    assert!(!reply.ids.is_empty());
}
