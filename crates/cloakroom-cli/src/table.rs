//! Output that fits a terminal: aligned columns, bold headers only on a terminal.

use std::io::IsTerminal as _;
use std::time::{Duration, UNIX_EPOCH};

/// Whether stdout gets colour: a terminal, and `NO_COLOR` unset.
pub(crate) fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in bold when `on`.
pub(crate) fn bold(text: &str, on: bool) -> String {
    if on {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Prints `rows` under `header`, each column as wide as its widest cell (counted in
/// characters), two spaces apart; the last column is not padded.
pub(crate) fn print(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>, style: bool| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = if i == last {
                0
            } else {
                w - cell.chars().count() + 2
            };
            out.push_str(&bold(cell, style));
            out.push_str(&" ".repeat(pad));
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect(), colour());
    for row in rows {
        line(row.clone(), false);
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn time(unix: u64) -> String {
    if unix >= 253_402_300_800 {
        return "never".to_owned();
    }
    let t = UNIX_EPOCH + Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// A cell for an optional text: `-` when absent, control characters escaped, cut to `max`
/// characters with an ellipsis.
pub(crate) fn text(value: Option<&str>, max: usize) -> String {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return "-".to_owned();
    };
    let clean: String = value
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if clean.chars().count() <= max {
        clean
    } else {
        let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(text(None, 5), "-");
        assert_eq!(text(Some("abcdefgh"), 5), "abcd…");
        assert_eq!(text(Some("a\nb"), 10), "a\\nb");
    }
}
