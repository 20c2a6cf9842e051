//! The mutator: a seeded generator and the edits it makes to an input.
//!
//! Byte-level, so any target can use it; the edits that know about lines,
//! numbers and nesting suit text formats and are harmless on others.

/// SplitMix64: small, fast, and the same sequence for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers at the edges of what the language accepts.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "99999999999999999999999999999999",
    "1e308",
    "1.8e308",
    "1e999",
    "-1e999",
    "1e-400",
    "4.9e-324",
    "0.000000000000000000000000000001",
    "1E3",
    ".5",
    "1.",
    "7.8125e-05",
    "00000000000000000000000000001",
    "1e",
    "1e+",
    "--1",
    "nan",
    "inf",
];

/// Characters that are more than one byte, zero width, or break lines elsewhere.
const UNICODE: &[&str] = &[
    "é",
    "e\u{301}",
    "→",
    "😀",
    "\u{200b}",
    "\u{feff}",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{a0}",
    "\u{202e}",
    "ｉｍａｇｅ",
    "\u{10ffff}",
    "İ",
    "ß",
];

/// The most bytes one "line many times" edit adds.
const MAX_REPEAT: usize = 64 * 1024;

/// Replaces `input` by a mutation of it: one to four edits. `others` are
/// inputs to splice from; `tokens` the target's vocabulary.
pub fn mutate(
    rng: &mut Rng,
    input: &mut Vec<u8>,
    others: &[Vec<u8>],
    tokens: &[&[u8]],
    max_len: usize,
) {
    // Now and then an input may grow past `max_len` (to reach the parser's
    // pieces on threads, from 64 KiB), never past eight times it or 128 KiB.
    let cap = if rng.one_in(20) {
        (max_len * 8).max(128 * 1024)
    } else {
        max_len
    };
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        edit(rng, input, others, tokens);
        // After each edit: repeated lines of repeated lines would grow
        // without bound within one mutation.
        if input.len() > cap {
            let at = char_floor(input, cap);
            input.truncate(at);
        }
    }
}

fn edit(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>], tokens: &[&[u8]]) {
    let len = input.len();
    match rng.below(18) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = *rng.pick(&[
                0, b'\t', b'\n', b'\r', b'{', b'}', b'"', b'#', 0x7f, 0x80, 0xc3, 0xff,
            ]);
        }
        2..=4 => {
            let token = *rng.pick(tokens);
            insert(input, at_boundary(rng, input), token);
        }
        5 if len > 0 => {
            let a = rng.below(len);
            let most = if rng.one_in(4) { 256 } else { 16 };
            let b = (a + 1 + rng.below(most)).min(len);
            input.drain(a..b);
        }
        6 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            let piece = input[a..b].to_vec();
            insert(input, at_boundary(rng, input), &piece);
        }
        7 | 8 if !others.is_empty() => {
            // Splice: lines of another input at a line start of this one.
            let other = rng.pick(others);
            let lines = line_starts(other);
            let a = *rng.pick(&lines);
            let b = lines
                .get(lines.partition_point(|&s| s <= a) + rng.below(6))
                .copied()
                .unwrap_or(other.len());
            let piece = other[a..b.max(a)].to_vec();
            let here = *rng.pick(&line_starts(input));
            if rng.one_in(2) {
                // Replace this line.
                let end = input[here..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(input.len(), |p| here + p + 1);
                input.splice(here..end, piece);
            } else {
                insert(input, here, &piece);
            }
        }
        9 => {
            // A number at the edge of the language, in place of one or anywhere.
            let number = rng.pick(NUMBERS).as_bytes();
            match digit_run(rng, input) {
                Some((a, b)) => {
                    input.splice(a..b, number.iter().copied());
                }
                None => insert(input, at_boundary(rng, input), number),
            }
        }
        10 => {
            // Nesting around the limit (32), as blocks or calls.
            let depth = if rng.one_in(2) {
                30 + rng.below(5)
            } else {
                1 + rng.below(40)
            };
            let (open, close): (&[u8], &[u8]) = match rng.below(3) {
                0 => (b"{", b"}"),
                1 => (b"f(", b")"),
                _ => (b"x { ", b" }\n"),
            };
            let mut piece = open.repeat(depth);
            if !rng.one_in(3) {
                piece.extend(close.repeat(depth));
            }
            insert(input, at_boundary(rng, input), &piece);
        }
        11 => {
            let c = rng.pick(UNICODE).as_bytes();
            insert(input, at_boundary(rng, input), c);
        }
        12 => {
            // Line ends: all CRLF, all lone CR, or one changed.
            let text = std::mem::take(input);
            *input = match rng.below(3) {
                0 => replace(&text, b"\n", b"\r\n"),
                1 => replace(&text, b"\n", b"\r"),
                _ => {
                    let mut t = text;
                    let at = at_boundary(rng, &t);
                    insert(&mut t, at, b"\r");
                    t
                }
            };
        }
        13 if len > 0 => {
            let at = rng.below(len);
            input.truncate(char_floor(input, at));
        }
        14 => {
            // Swap two lines.
            let lines = line_starts(input);
            if lines.len() > 2 {
                let i = rng.below(lines.len() - 1);
                let (a, b, c) = (
                    lines[i],
                    lines[i + 1],
                    lines.get(i + 2).copied().unwrap_or(input.len()),
                );
                let mut swapped = input[b..c].to_vec();
                if !swapped.ends_with(b"\n") {
                    swapped.push(b'\n');
                }
                swapped.extend_from_slice(&input[a..b]);
                input.splice(a..c, swapped);
            }
        }
        15 => {
            // One line many times.
            let lines = line_starts(input);
            let a = *rng.pick(&lines);
            let b = input[a..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(input.len(), |p| a + p + 1);
            let line = input[a..b].to_vec();
            let times = 1 + rng.below(200).min(MAX_REPEAT / line.len().max(1));
            insert(input, b, &line.repeat(times));
        }
        16 if rng.one_in(25) && len > 0 => {
            // Past 64 KiB, where the parser cuts a file into pieces on threads.
            let copy = input.clone();
            while input.len() < 70 * 1024 {
                input.push(b'\n');
                input.extend_from_slice(&copy);
            }
        }
        _ => {
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            insert(input, at_boundary(rng, input), &bytes);
        }
    }
}

fn insert(input: &mut Vec<u8>, at: usize, piece: &[u8]) {
    input.splice(at..at, piece.iter().copied());
}

/// A random place, mostly at a character boundary (so UTF-8 stays UTF-8).
fn at_boundary(rng: &mut Rng, input: &[u8]) -> usize {
    let at = rng.below(input.len() + 1);
    if rng.one_in(10) {
        at
    } else {
        char_floor(input, at)
    }
}

/// The last character boundary at or before `at` (in UTF-8 terms).
fn char_floor(input: &[u8], at: usize) -> usize {
    let mut at = at.min(input.len());
    while at > 0 && at < input.len() && (input[at] & 0xc0) == 0x80 {
        at -= 1;
    }
    at
}

fn line_starts(input: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(
        input
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == b'\n')
            .map(|(i, _)| i + 1),
    );
    starts
}

/// A run of digits, chosen at random among the input's first few.
fn digit_run(rng: &mut Rng, input: &[u8]) -> Option<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < input.len() && runs.len() < 64 {
        if input[i].is_ascii_digit() {
            let start = i;
            while i < input.len() && (input[i].is_ascii_alphanumeric() || input[i] == b'.') {
                i += 1;
            }
            runs.push((start, i));
        }
        i += 1;
    }
    (!runs.is_empty()).then(|| *rng.pick(&runs))
}

fn replace(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}
