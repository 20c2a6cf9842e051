//! A run killed with SIGKILL mid-training resumes (`wfrun FILE --resume`) to
//! the same final weights as a run never interrupted.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

#[path = "common/bars.rs"]
mod bars;

fn write_images(root: &Path) {
    bars::write_bars(root, 12);
}

fn workflow(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.wf"));
    std::fs::write(
        &path,
        format!(
            "workflow {name}\nuse Clarifai_InceptionBatchNorm {{ image_size = 32  batch_size = 6  num_epochs = 4  init_epochs = 3  step_epochs = 1  logreg = 0 }}\ndata {{ train = \"images\"  eval = 0.25 }}\nseed = 11\n"
        ),
    )
    .unwrap();
    path
}

fn wfrun(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(args)
        .output()
        .unwrap()
}

fn model(path: &Path) -> HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t): (String, Tensor)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));

    let whole = workflow(dir.path(), "whole");
    let out = wfrun(&[whole.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = workflow(dir.path(), "killed");
    let run_dir = dir.path().join("runs/killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(["run", killed.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !run_dir.join("checkpoint.safetensors").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !run_dir.join("model.safetensors").exists(),
        "killed before the end"
    );

    let out = wfrun(&[killed.to_str().unwrap(), "--resume"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("epochs 2–4")
            || stderr.contains("epochs 3–4")
            || stderr.contains("epochs 4–4"),
        "{stderr}"
    );
    assert_eq!(
        model(&dir.path().join("runs/whole/model.safetensors")),
        model(&run_dir.join("model.safetensors")),
        "resuming after a kill must give the uninterrupted run's weights"
    );
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        4,
        "one line per epoch, none repeated:\n{metrics}"
    );
}

/// Runs `wfrun run FILE` in the background, its standard error captured.
fn spawn(file: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .arg("run")
        .arg(file)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_second_run_on_a_folder_is_refused_and_sigterm_saves_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let file = workflow(dir.path(), "owned");
    let run_dir = dir.path().join("runs/owned");
    let mut first = spawn(&file, &[]);
    let started = Instant::now();
    while !run_dir.join(wfrun::exec::LOCK).exists() {
        assert!(first.try_wait().unwrap().is_none(), "the run ended early");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no lock appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Two runs at once on one folder: the second is refused, naming the first.
    let second = wfrun(&["run", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another run is writing") && stderr.contains(&first.id().to_string()),
        "{stderr}"
    );

    // SIGTERM (as a batch scheduler sends) stops it with a checkpoint, like Ctrl-C.
    while !run_dir.join("metrics.jsonl").exists() {
        assert!(first.try_wait().unwrap().is_none(), "the run ended early");
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no epoch ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its model asked for while it trains: said to be training, by whom.
    let image = dir.path().join("images/c0/0.png");
    let predict = || {
        wfrun(&[
            "predict",
            run_dir.to_str().unwrap(),
            image.to_str().unwrap(),
        ])
    };
    let early = predict();
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert_eq!(early.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("this run is still training")
            && stderr.contains(&format!("process {}", first.id())),
        "{stderr}"
    );
    let pid = libc::pid_t::try_from(first.id()).unwrap();
    // SAFETY: sends SIGTERM to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("saved a checkpoint"), "{stderr}");
    assert!(run_dir.join("checkpoint.safetensors").is_file());
    assert!(
        !run_dir.join(wfrun::exec::LOCK).exists(),
        "the lock is released"
    );

    // Run again without `--resume`: refused, nothing lost.
    let again = wfrun(&["run", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds a previous run (checkpoint.safetensors)")
            && stderr.contains("--resume")
            && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert!(run_dir.join("checkpoint.safetensors").is_file());
    // Its model asked for now: said to have stopped, and how to finish it.
    let stopped = predict();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("this run stopped before it finished")
            && stderr.contains("--resume")
            && stderr.contains("`owned`"),
        "{stderr}"
    );

    // A lock left by a killed run does not block the next.
    std::fs::write(run_dir.join(wfrun::exec::LOCK), "4194999\n").unwrap();
    let resumed = wfrun(&["run", file.to_str().unwrap(), "--resume"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(run_dir.join("model.safetensors").is_file());
}

/// `wfrun FILE.wf 2>closed | closed`: the run finishes, its status its own.
#[test]
fn a_run_into_closed_pipes_finishes() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let file = workflow(dir.path(), "piped");
    let (reader, writer) = std::io::pipe().unwrap();
    let (reader2, writer2) = std::io::pipe().unwrap();
    drop((reader, reader2));
    let status = Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .arg(&file)
        .stdout(writer)
        .stderr(writer2)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(dir.path().join("runs/piped/model.safetensors").is_file());
    assert!(dir.path().join("runs/piped/report.html").is_file());
}

/// A disk that fills up (a file-size limit stands in for it): the run stops
/// naming the file it was writing, and leaves no partial file behind.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_names_the_file_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let file = workflow(dir.path(), "full_disk");
    let run_dir = dir.path().join("runs/full_disk");
    // 4 MiB per file: the plan and metrics fit, the checkpoint does not.
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 8192; exec \"$0\" run \"$1\"")
        .arg(env!("CARGO_BIN_EXE_wfrun"))
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write `") && stderr.contains("checkpoint.safetensors`"),
        "{stderr}"
    );
    assert!(stderr.contains("the disk has room"), "{stderr}");
    let plan = std::fs::read_to_string(run_dir.join("plan.json")).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&plan).is_ok());
    let leftovers: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n == "checkpoint.safetensors")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!run_dir.join(wfrun::exec::LOCK).exists());
}
