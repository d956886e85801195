//! Aggregate frames → display tables (text cells with a CSS class), one formatting rule per
//! column kind so the HTML and the Markdown show the same digits.

use anyhow::Result;
use polars::prelude::*;
use serde::Serialize;

/// A table ready for the templates.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub id: String,
    pub title: String,
    pub caption: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// One cell: its text, the same text escaped for a Markdown table, and a CSS class
/// (`num`, `text`, `na`, `best`, `bad`).
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub text: String,
    pub md: String,
    pub class: &'static str,
}

/// Statuses shown as problems (diverged and out-of-memory runs are shown, never dropped).
const BAD: [&str; 5] = ["diverged", "oom", "failed", "uncertified", "unsound"];

/// How a float column is printed, chosen by its name: hyper-parameters in scientific notation
/// with two significant digits, percentages with one decimal (as the paper prints them), memory
/// in GB with three decimals, the Lipschitz bound with four, ratios with two, anything else with
/// three significant digits.
pub fn format_float(column: &str, x: f64) -> String {
    let c = column.to_ascii_lowercase();
    let word = |w: &str| c == w || c.ends_with(&format!(" {w}")) || c.starts_with(&format!("{w} "));
    if !x.is_finite() {
        return x.to_string();
    }
    if word("lr") || word("wd") {
        format!("{x:.1e}")
    } else if c.contains('%') || c.contains("pct") || c.contains("accuracy") || is_percent_column(&c) {
        format!("{x:.1}")
    } else if c.contains("lipschitz") {
        format!("{x:.4}")
    } else if c.contains("gb") {
        format!("{x:.3}")
    } else if c.contains("ratio") || c.contains("factor") || c == "diff" {
        format!("{x:.2}")
    } else {
        significant(x, 3)
    }
}

/// CRA and ERA columns, also the paper's (`cra_36`, `cra_pw_72`, `era_255`, `paper_cra_36`).
fn is_percent_column(name: &str) -> bool {
    let name = name.strip_prefix("paper_").or_else(|| name.strip_prefix("attack_")).unwrap_or(name);
    name.starts_with("cra") || name.starts_with("era_")
}

/// `x` with `digits` significant digits, without an exponent for the ranges a report shows.
pub fn significant(x: f64, digits: i32) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    format!("{x:.decimals$}")
}

/// Column name as shown: percentages (`accuracy`, `cra_*`, `era_*`, their `paper_*`, `*_pct`) get
/// `%`, underscores become spaces.
pub fn pretty(name: &str) -> String {
    let percent = name.ends_with("accuracy") || is_percent_column(name);
    let shown = name.replace("_pct", " %").replace('_', " ");
    if percent {
        format!("{shown} %")
    } else {
        shown
    }
}

fn cell(column: &str, v: AnyValue) -> Cell {
    let (text, class) = match v {
        AnyValue::Null => ("–".to_string(), "na"),
        AnyValue::Float64(x) => (format_float(column, x), "num"),
        AnyValue::Float32(x) => (format_float(column, x as f64), "num"),
        AnyValue::Int64(x) => (x.to_string(), "num"),
        AnyValue::Int32(x) => (x.to_string(), "num"),
        AnyValue::UInt32(x) => (x.to_string(), "num"),
        AnyValue::UInt64(x) => (x.to_string(), "num"),
        AnyValue::Boolean(b) => ((if b { "yes" } else { "no" }).to_string(), "text"),
        AnyValue::String(s) => {
            let class = if s == "best" {
                "best"
            } else if BAD.contains(&s) {
                "bad"
            } else {
                "text"
            };
            (s.to_string(), class)
        }
        AnyValue::StringOwned(s) => (s.to_string(), "text"),
        other => (other.to_string(), "text"),
    };
    let md = text.replace('|', "\\|");
    Cell { text, md, class }
}

/// The standard deviation column of `name` in `df` (`<name>_std` or `<name> std`), if any.
fn std_sibling<'a>(df: &'a DataFrame, name: &str) -> Option<&'a Column> {
    df.column(&format!("{name}_std")).ok().or_else(|| df.column(&format!("{name} std")).ok())
}

/// Whether `name` is the standard deviation of another column of `names`.
fn is_std_of_another(name: &str, names: &[&str]) -> bool {
    let base = name.strip_suffix("_std").or_else(|| name.strip_suffix(" std"));
    base.is_some_and(|b| names.contains(&b))
}

/// Every row of `df` as text cells; `columns` picks and orders columns (all when empty). A
/// column with a standard deviation beside it (`<c>_std` or `<c> std`, over seeds) is shown as
/// `mean ± std` where the deviation exists (several runs), and the deviation column is not shown
/// on its own.
pub fn from_frame(df: &DataFrame, id: &str, title: &str, caption: &str, columns: &[&str]) -> Result<Table> {
    let all: Vec<&str> = df.get_column_names().into_iter().map(|n| n.as_str()).collect();
    let picked: Vec<&str> = if columns.is_empty() { all.clone() } else { columns.to_vec() };
    let shown: Vec<&str> = picked.iter().copied().filter(|c| !is_std_of_another(c, &all)).collect();
    let selected = df.select(shown.iter().copied())?;
    let cols = selected.get_columns();
    let mut rows = Vec::with_capacity(df.height());
    for r in 0..df.height() {
        let mut row = Vec::with_capacity(cols.len());
        for c in cols {
            let name = c.name().as_str();
            let mut cell = cell(name, c.get(r)?);
            if let Some(AnyValue::Float64(sd)) = std_sibling(df, name).map(|s| s.get(r)).transpose()? {
                if cell.class == "num" && sd.is_finite() {
                    cell.text = format!("{} ± {}", cell.text, format_float(name, sd));
                    cell.md = cell.text.clone();
                }
            }
            row.push(cell);
        }
        rows.push(row);
    }
    Ok(Table {
        id: id.into(),
        title: title.into(),
        caption: caption.into(),
        columns: cols.iter().map(|c| pretty(c.name().as_str())).collect(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_printed_by_column_kind() {
        assert_eq!(format_float("lr", 0.0573), "5.7e-2");
        assert_eq!(format_float("2h wd", 3.68e-5), "3.7e-5");
        assert_eq!(format_float("accuracy_pct", 71.74), "71.7");
        assert_eq!(format_float("cifar10 24h CRA 36 %", 59.09), "59.1");
        assert_eq!(format_float("peak_train_gb", 1.16), "1.160");
        assert_eq!(format_float("epoch_seconds", 615.4), "615");
        assert_eq!(format_float("epoch_seconds", 8.774), "8.77");
        assert_eq!(format_float("infer_ms_per_batch", 0.012345), "0.0123");
    }

    #[test]
    fn percent_columns_are_named_so() {
        assert_eq!(pretty("accuracy"), "accuracy %");
        assert_eq!(pretty("cra_36"), "cra 36 %");
        assert_eq!(pretty("paper_cra_255"), "paper cra 255 %");
        assert_eq!(pretty("era_72"), "era 72 %");
        assert_eq!(pretty("attack_cra_36"), "attack cra 36 %");
        assert_eq!(pretty("attack_flips"), "attack flips");
        assert_eq!(format_float("paper_cra_255", 3.94), "3.9");
        assert_eq!(pretty("eval_cra_36_pct"), "eval cra 36 %");
        assert_eq!(pretty("train_peak_bytes"), "train peak bytes");
    }

    #[test]
    fn a_column_with_a_deviation_beside_it_shows_mean_plus_minus_std() {
        let df = df!("method" => ["AOL", "SOC"], "cra_36" => [40.04, 30.0], "cra_36_std" => [Some(1.26), None]).unwrap();
        let t = from_frame(&df, "t", "t", "", &[]).unwrap();
        assert_eq!(t.columns, vec!["method", "cra 36 %"]);
        assert_eq!(t.rows[0][1].text, "40.0 ± 1.3");
        // One run: no deviation, the mean alone.
        assert_eq!(t.rows[1][1].text, "30.0");
    }

    #[test]
    fn statuses_get_classes_and_pipes_are_escaped() {
        assert_eq!(cell("status", AnyValue::String("diverged")).class, "bad");
        assert_eq!(cell("mark", AnyValue::String("best")).class, "best");
        assert_eq!(cell("x", AnyValue::String("a|b")).md, "a\\|b");
        assert_eq!(cell("x", AnyValue::Null).text, "–");
    }
}
