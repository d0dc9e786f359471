//! Plain aligned tables for terminal output (kubectl style: upper-case headers, two spaces).

/// A table being built.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    event: Option<String>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            event: None,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Fills the first column of every row (the watch event type).
    pub fn set_event(&mut self, event: &str) {
        self.event = Some(event.to_string());
        for r in &mut self.rows {
            if let Some(c) = r.first_mut() {
                *c = event.to_string();
            }
        }
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    fn line(cells: &[String], widths: &[usize]) -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!(
                    "{c:<w$}  ",
                    w = widths.get(i).copied().unwrap_or(0)
                ));
            }
        }
        out.trim_end().to_string() + "\n"
    }

    /// The whole table with its header.
    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        self.render_rows(true)
    }

    /// Rows, optionally preceded by the header (for streaming output).
    pub fn render_rows(&self, header: bool) -> String {
        let widths = self.widths();
        let mut out = String::new();
        if header {
            out.push_str(&Self::line(&self.headers, &widths));
        }
        for r in &self.rows {
            out.push_str(&Self::line(r, &widths));
        }
        out
    }
}
