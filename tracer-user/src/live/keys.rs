//! The live view's keys, in one table: the state (`app`) looks actions up
//! in it, and the help screen (`ui`) lists it, so the two cannot disagree.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Pause,
    Pane,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Open,
    Back,
    Sort,
    Reverse,
    Filter,
    Log,
    Repaint,
}

/// One key: its code, and whether it needs Ctrl.
pub type Key = (KeyCode, bool);

/// One line of the help screen: keys and the action each triggers.
pub struct Binding {
    pub keys: &'static [(Key, Action)],
    /// The keys as the help screen shows them.
    pub label: &'static str,
    pub what: &'static str,
}

const fn plain(c: char) -> Key {
    (KeyCode::Char(c), false)
}

const fn ctrl(c: char) -> Key {
    (KeyCode::Char(c), true)
}

const fn code(c: KeyCode) -> Key {
    (c, false)
}

use Action as A;

/// Every binding, in the help screen's order.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[
            (plain('q'), A::Quit),
            (ctrl('c'), A::Quit),
            (ctrl('C'), A::Quit),
        ],
        label: "q  Ctrl-C",
        what: "quit (the recording gets its footer)",
    },
    Binding {
        keys: &[(plain('?'), A::Help), (code(KeyCode::F(1)), A::Help)],
        label: "?  F1",
        what: "this help (Esc closes)",
    },
    Binding {
        keys: &[(plain(' '), A::Pause)],
        label: "space",
        what: "pause the display (tracing goes on)",
    },
    Binding {
        keys: &[
            (code(KeyCode::Tab), A::Pane),
            (code(KeyCode::BackTab), A::Pane),
            (code(KeyCode::Left), A::Pane),
            (code(KeyCode::Right), A::Pane),
        ],
        label: "Tab  Left/Right",
        what: "switch between findings and pages",
    },
    Binding {
        keys: &[
            (code(KeyCode::Up), A::Up),
            (code(KeyCode::Down), A::Down),
            (plain('j'), A::Down),
            (plain('k'), A::Up),
        ],
        label: "Up/Down  j/k",
        what: "move",
    },
    Binding {
        keys: &[
            (code(KeyCode::PageUp), A::PageUp),
            (code(KeyCode::PageDown), A::PageDown),
        ],
        label: "PgUp/PgDn",
        what: "move a screen",
    },
    Binding {
        keys: &[
            (code(KeyCode::Home), A::Home),
            (code(KeyCode::End), A::End),
            (plain('g'), A::Home),
            (plain('G'), A::End),
        ],
        label: "Home/End  g/G",
        what: "first / last",
    },
    Binding {
        keys: &[(code(KeyCode::Enter), A::Open)],
        label: "Enter",
        what: "open the selected finding's or row's page",
    },
    Binding {
        keys: &[(code(KeyCode::Esc), A::Back)],
        label: "Esc",
        what: "back to the list; clear the filter",
    },
    Binding {
        keys: &[(plain('s'), A::Sort), (plain('S'), A::Reverse)],
        label: "s  S",
        what: "sort pages by the next column; reverse",
    },
    Binding {
        keys: &[(plain('/'), A::Filter)],
        label: "/",
        what: "filter findings and pages",
    },
    Binding {
        keys: &[(plain('l'), A::Log)],
        label: "l",
        what: "log messages",
    },
    Binding {
        keys: &[(ctrl('l'), A::Repaint), (ctrl('L'), A::Repaint)],
        label: "Ctrl-L",
        what: "repaint the screen",
    },
];

/// The action bound to `k`, if any.
pub fn action(k: &KeyEvent) -> Option<Action> {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    BINDINGS
        .iter()
        .flat_map(|b| b.keys)
        .find(|&&((code, c), _)| code == k.code && c == ctrl)
        .map(|&(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn every_key_is_bound_once_and_ctrl_is_its_own_key() {
        let mut seen = Vec::new();
        for b in BINDINGS {
            assert!(!b.keys.is_empty(), "{} has no key", b.label);
            for (k, _) in b.keys {
                assert!(!seen.contains(k), "{k:?} is bound twice");
                seen.push(*k);
            }
        }
        let none = KeyModifiers::NONE;
        assert_eq!(action(&key(KeyCode::Char('l'), none)), Some(Action::Log));
        assert_eq!(
            action(&key(KeyCode::Char('l'), KeyModifiers::CONTROL)),
            Some(Action::Repaint)
        );
        assert_eq!(
            action(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action(&key(KeyCode::Char('c'), none)), None);
        assert_eq!(
            action(&key(KeyCode::Char('S'), KeyModifiers::SHIFT)),
            Some(Action::Reverse)
        );
    }
}
