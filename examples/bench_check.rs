//! Check throughput: a generated 10,000-line workflow, and a folder of 1,000
//! workflow files. Prints one JSON line per case with the median time.
//!
//!     cargo run --release --example bench_check [-- --runs N] [--only-large N]

use std::path::Path;
use std::time::Instant;

use wfrun::CheckOptions;

fn large_workflow(lines: usize, data: &Path) -> String {
    let mut s = format!(
        "# generated: {lines} lines\nworkflow large\nuse Clarifai_ResNext {{\n    image_size = 64\n    batch_size = 32\n    logreg = 0\n}}\ndata {{ train = \"{}\"  eval = 0.2 }}\n",
        data.display()
    );
    let mut i = 0;
    while s.lines().count() < lines {
        s.push_str(&format!(
            "# section {i}\ntemplate T{i} extends Clarifai_ResNext {{\n    doc = \"template number {i}\"\n    param image_size {{ min = 64  max = 512  default = 128 }}\n    param batch_size {{ max = 64  default = 32 }}\n}}\nstep clustering as c{i} {{ k = {}  iterations = 50 }}\nstep visual_search as s{i} {{ top_k = {} }}\n",
            2 + i % 10,
            1 + i % 20
        ));
        i += 1;
    }
    s
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: the prelude is parsed once per process
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(21);
    let data =
        std::fs::canonicalize("workflows/data/shapes").expect("run from the repository root");
    let fs_on = CheckOptions::default();
    let fs_off = CheckOptions {
        filesystem: false,
        ..Default::default()
    };

    let text = large_workflow(10_000, &data);
    let lines = text.lines().count();
    // `--only-large N`: N checks of the large file without file-system
    // checks and nothing else, for a profiler.
    if let Some(n) = args
        .iter()
        .position(|a| a == "--only-large")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
    {
        for _ in 0..n {
            let c = wfrun::check_source("large.wf", &text, &fs_off);
            assert!(c.diagnostics.is_empty());
        }
        return;
    }
    for (name, opts) in [("large_file_fs", &fs_on), ("large_file_no_fs", &fs_off)] {
        let ms = time(runs, || {
            let c = wfrun::check_source("large.wf", &text, opts);
            assert!(c.diagnostics.is_empty(), "{:?}", &c.diagnostics[..1]);
        });
        println!(
            "{{\"case\":\"{name}\",\"lines\":{lines},\"bytes\":{},\"median_ms\":{ms:.3}}}",
            text.len()
        );
    }

    // The large file's phases: the parse alone, on one thread and as
    // `check_source` does it, then dropping a checked result.
    type Parse =
        fn(wfrun::SourceId, &str, usize) -> (wfrun::syntax::Module, Vec<wfrun::Diagnostic>);
    let cases: [(&str, Parse, usize); 4] = [
        (
            "large_file_parse_1_thread",
            wfrun::syntax::parse_with_threads,
            1,
        ),
        ("large_file_parse", wfrun::syntax::parse_with_threads, 4),
        (
            "large_file_parse_pest_1_thread",
            wfrun::syntax::parse_with_pest,
            1,
        ),
        ("large_file_parse_pest", wfrun::syntax::parse_with_pest, 4),
    ];
    for (name, parse, threads) in cases {
        let ms = time(runs, || {
            let (m, d) = parse(wfrun::SourceId(1), &text, threads);
            assert!(d.is_empty() && !m.items.is_empty());
        });
        println!("{{\"case\":\"{name}\",\"median_ms\":{ms:.3}}}");
    }
    let mut drops = Vec::new();
    for _ in 0..runs {
        let c = wfrun::check_source("large.wf", &text, &fs_off);
        let t = Instant::now();
        drop(c);
        drops.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{{\"case\":\"large_file_drop\",\"median_ms\":{:.3}}}",
        median(drops)
    );

    // The cost model's share: its estimate alone, and a 1,000-line file
    // checked, then checked with the editor's inlay hints (a check, the plan,
    // the hints), the hints' count as an editor keeps it.
    let text = large_workflow(1_000, &data);
    let c = wfrun::check_source("large.wf", &text, &fs_on);
    let w = c.workflow.expect("checks");
    let found = wfrun::plan::DataFound::counted(w.dataset.as_ref(), &w.data.eval);
    let ms = time(runs * 50, || {
        let e = wfrun::plan::estimate_cost(&w.hyper, &found, w.device, &w.machine, true);
        assert!(e.is_some());
    });
    println!("{{\"case\":\"estimate\",\"median_ms\":{ms:.4}}}");
    let check_ms = time(runs, || {
        let c = wfrun::check_source("large.wf", &text, &fs_off);
        assert!(c.diagnostics.is_empty());
    });
    let hints_ms = time(runs, || {
        let h = wfrun::ide::inlay_hints(&text, "large.wf", &fs_off, Some(&found));
        assert_eq!(h.len(), 3, "{h:?}");
    });
    println!(
        "{{\"case\":\"file_1000_no_fs\",\"median_ms\":{check_ms:.3}}}\n{{\"case\":\"file_1000_hints\",\"median_ms\":{hints_ms:.3},\"added_ms\":{:.3}}}",
        hints_ms - check_ms
    );

    let dir = std::env::temp_dir().join(format!("wfrun-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped: Vec<String> = wfrun::workflow_files(Path::new("workflows"))
        .unwrap()
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .replace("\"data/shapes\"", &format!("\"{}\"", data.display()))
        })
        .collect();
    for i in 0..1000 {
        let sub = dir.join(format!("group{}", i / 100));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("w{i}.wf")), &shipped[i % shipped.len()]).unwrap();
    }
    // As `wfrun check FOLDER` does: one set of listings for the command
    // (made anew for each timed run), so the shared data folder is walked once.
    let shared = || CheckOptions {
        listings: Some(wfrun::data::Listings::new()),
        ..Default::default()
    };
    for (name, opts) in [
        ("folder_1000_fs", None),
        ("folder_1000_fs_each_walks", Some(&fs_on)),
        ("folder_1000_no_fs", Some(&fs_off)),
    ] {
        let ms = time(runs.min(7), || {
            let files = wfrun::workflow_files(&dir).unwrap();
            assert_eq!(files.len(), 1000);
            let command = shared();
            let opts = opts.unwrap_or(&command);
            for f in files {
                let c = wfrun::check_file(&f, opts).unwrap();
                assert!(!c.has_errors());
            }
        });
        println!("{{\"case\":\"{name}\",\"files\":1000,\"median_ms\":{ms:.3}}}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
