//! `tmpl completions SHELL`: the shell completion script, generated from the clap definition
//! (so it always knows every subcommand and flag this binary has).

use std::io::{self, Write};

use clap_complete::Shell;
use serde::Serialize;

use super::{Ctx, Outcome};
use crate::error::Result;
use crate::report::{Report, Style};

#[derive(Debug, clap::Args)]
#[command(after_help = "Install (the Debian package does this): bash: tmpl completions bash > \
/usr/share/bash-completion/completions/tmpl; zsh: tmpl completions zsh > /usr/share/zsh/vendor-completions/_tmpl; \
fish: tmpl completions fish > /usr/share/fish/vendor_completions.d/tmpl.fish.\n\
Exit status: 0; 2 for an unknown shell.")]
pub struct Args {
    /// The shell to generate the completion script for
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Serialize)]
pub struct CompletionsReport {
    pub shell: String,
    /// The completion script.
    pub script: String,
}

impl Report for CompletionsReport {
    fn command(&self) -> &'static str {
        "completions"
    }

    fn ok(&self) -> bool {
        true
    }

    /// The script itself, nothing else (it is meant to be redirected into a file or `source`d).
    fn render(&self, w: &mut dyn Write, _style: &Style) -> io::Result<()> {
        w.write_all(self.script.as_bytes())
    }
}

/// The completion script for `shell` of the command tree `cli` (the entry layer passes tmpl's own
/// clap definition, so this module need not import `cli`). Generated into memory first: clap_complete panics when its
/// writer fails (a closed pipe), and the output layer handles that.
pub fn script(shell: Shell, mut cli: clap::Command) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cli, "tmpl", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// `cli` is the command tree to complete (tmpl's, from the entry layer).
pub fn run(args: Args, _ctx: &Ctx, cli: clap::Command) -> Result<Outcome> {
    Ok(Outcome::Completions(CompletionsReport { shell: args.shell.to_string(), script: script(args.shell, cli) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn tree() -> clap::Command {
        crate::cli::Cli::command()
    }

    /// Every subcommand and every long flag of each (globals included) appears in the scripts,
    /// so a new flag without completion cannot happen.
    #[test]
    fn scripts_name_every_subcommand_and_flag() {
        let cli = crate::cli::Cli::command();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell, tree());
            for sub in cli.get_subcommands() {
                assert!(s.contains(sub.get_name()), "{shell}: no subcommand {}", sub.get_name());
                for arg in sub.get_arguments().chain(cli.get_arguments()) {
                    if let Some(long) = arg.get_long() {
                        assert!(s.contains(long), "{shell}: no --{long} (of {})", sub.get_name());
                    }
                }
            }
        }
    }

    #[test]
    fn bash_script_registers_tmpl() {
        let s = script(Shell::Bash, tree());
        assert!(s.contains("complete -F _tmpl") && s.contains("tmpl"), "{s}");
        let fish = script(Shell::Fish, tree());
        assert!(fish.contains("complete -c tmpl"), "{fish}");
        assert!(script(Shell::Zsh, tree()).starts_with("#compdef tmpl"));
    }
}
