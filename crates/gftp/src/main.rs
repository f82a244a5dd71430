//! The `gftp` binary: parses the command line and config, sets up logging on
//! stderr, and runs one command on the library (`server` is yapapi's JSON-RPC).

use anyhow::Context;
use clap::Parser;
use golem_gftp::config::{Cli, Command, GftpConfig};
use golem_gftp::{rpc, Gftp, GftpUrl};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = match GftpConfig::load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gftp: {error}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let code = match run(cli.command, config).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("gftp: {error:#}");
            1
        }
    };
    // Exit right away: tokio's stdin reader sits in a blocking read that would
    // otherwise hold the runtime's shutdown until the next input line.
    std::process::exit(code)
}

async fn connect(config: &GftpConfig) -> anyhow::Result<Gftp> {
    Ok(Gftp::connect(&config.bus_socket)
        .await?
        .with_config(config.transfer))
}

fn parse_url(text: &str) -> anyhow::Result<GftpUrl> {
    Ok(text.parse::<GftpUrl>()?)
}

async fn run(command: Command, config: GftpConfig) -> anyhow::Result<()> {
    match command {
        Command::Server => {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            rpc::serve(
                input,
                tokio::io::stdout(),
                &config.bus_socket,
                config.transfer,
            )
            .await?;
        }
        Command::Version => println!("{}", rpc::VERSION),
        Command::Publish { files } => {
            let gftp = connect(&config).await?;
            for file in &files {
                let url = gftp
                    .publish(file)
                    .await
                    .with_context(|| format!("publishing {}", file.display()))?;
                println!("{url}");
            }
            wait_for_interrupt().await?;
        }
        Command::Receive { output_file } => {
            let gftp = connect(&config).await?;
            let mut receiving = gftp.receive(&output_file).await?;
            println!("{}", receiving.url);
            let received = receiving.finished().await?;
            eprintln!(
                "received {} bytes into {} (sha3 {})",
                received.size,
                received.path.display(),
                received.hash
            );
        }
        Command::Download { url, output_file } => {
            let url = parse_url(&url)?;
            let bytes = connect(&config).await?.download(&url, &output_file).await?;
            eprintln!("downloaded {bytes} bytes into {}", output_file.display());
        }
        Command::Upload { file, url } => {
            let url = parse_url(&url)?;
            let bytes = connect(&config).await?.upload(&file, &url).await?;
            eprintln!("uploaded {bytes} bytes from {}", file.display());
        }
    }
    Ok(())
}

async fn wait_for_interrupt() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
