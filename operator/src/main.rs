//! `kaa-operator`: `crd` prints the CustomResourceDefinitions; `run` reconciles Blueprints.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(version, about = "The kaa-rs Kubernetes operator")]
enum Command {
    /// Print the CustomResourceDefinition of `Blueprint` (YAML), e.g. for `kubectl apply -f -`.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Crd => {
            #[allow(clippy::print_stdout)] // the command's output
            {
                print!("{}", kaa_operator::crd::crd_yaml()?);
            }
        }
    }
    Ok(())
}
