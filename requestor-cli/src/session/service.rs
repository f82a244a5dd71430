//! Services: one provider runs a long-running command in a VM attached to a
//! network this session creates (Net API), and local TCP ports are forwarded
//! into the VM through the daemon's WebSocket TCP connections, like
//! `docker run -p`, until the caller stops it (Ctrl-C) or the command ends.
//! Then the activity is destroyed, the agreement ended, the network deleted;
//! [`Session::finish`] pays as for a job.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use futures::{SinkExt, StreamExt};
use golem_model::activity::DeployNetwork;
use golem_model::vpn::{Network, NewNetwork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// The network a service runs in: the requestor is `.1`, the provider `.2`.
const NETWORK_IP: &str = "192.168.0.0";
const NETWORK_MASK: &str = "255.255.255.0";
const REQUESTOR_IP: &str = "192.168.0.1";
const PROVIDER_IP: &str = "192.168.0.2";
/// What [`ServiceReport::command_ended`] says of a command that exited well.
pub const COMMAND_ENDED: &str = "the command ended";

/// `--publish [ADDR:]LOCAL:PORT`: listen on `ADDR:LOCAL` (127.0.0.1 when no
/// address is given) and forward each connection to `PORT` in the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub listen: SocketAddr,
    pub port: u16,
}

impl FromStr for Publish {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let usage =
            || format!("--publish {text:?}: use LOCAL:PORT or ADDR:LOCAL:PORT (e.g. 8080:80)");
        let (local, port) = text.rsplit_once(':').ok_or_else(usage)?;
        let port: u16 = port.parse().map_err(|_| usage())?;
        let listen = match local.parse::<u16>() {
            Ok(local_port) => SocketAddr::from(([127, 0, 0, 1], local_port)),
            Err(_) => local.parse::<SocketAddr>().map_err(|_| usage())?,
        };
        if port == 0 {
            return Err(usage());
        }
        Ok(Publish { listen, port })
    }
}

/// What to run and what to forward.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The command and its arguments, run in the VM once it started.
    pub command: Vec<String>,
    pub publish: Vec<Publish>,
    pub offer_timeout: Duration,
    pub deploy_timeout: Duration,
}

/// How a service ended.
#[derive(Debug, Clone, Default)]
pub struct ServiceReport {
    pub provider_name: String,
    /// TCP connections forwarded in all.
    pub connections: usize,
    /// Set when the command ended by itself (its output, or its error).
    pub command_ended: Option<String>,
    pub seconds: f64,
}

/// The network, agreement and activity of a running service.
struct Running {
    network: Network,
    agreement: SignedAgreement,
    activity_id: String,
}

impl Session {
    /// Run `service` on one provider until `stop` resolves or the command ends.
    pub async fn run_service(
        &self,
        spec: &DemandSpec,
        service: &ServiceSpec,
        stop: impl Future<Output = ()>,
    ) -> Result<ServiceReport> {
        let started = Instant::now();
        let mut spec = spec.clone();
        if !spec.capabilities.iter().any(|cap| cap == "vpn") {
            spec.capabilities.push("vpn".into());
        }
        let network = self
            .client
            .create_network(&NewNetwork {
                ip: NETWORK_IP.into(),
                mask: Some(NETWORK_MASK.into()),
                gateway: None,
            })
            .await?;
        let outcome = self.serve(&spec, service, &network, stop, started).await;
        if let Err(error) = self.client.delete_network(&network.id).await {
            tracing::warn!(network_id = %network.id, %error, "cannot delete the service network");
        }
        outcome
    }

    async fn serve(
        &self,
        spec: &DemandSpec,
        service: &ServiceSpec,
        network: &Network,
        stop: impl Future<Output = ()>,
        started: Instant,
    ) -> Result<ServiceReport> {
        // Bound first: a port in use fails before anything is rented.
        let mut listeners = Vec::new();
        for publish in &service.publish {
            let listener = TcpListener::bind(publish.listen).await.map_err(|error| {
                RequestorError::Usage(format!(
                    "cannot listen on {} for --publish: {error}",
                    publish.listen
                ))
            })?;
            listeners.push(listener);
        }
        let me = self.client.me().await?;
        self.client
            .add_network_node(&network.id, &me.identity.to_string(), REQUESTOR_IP)
            .await?;
        let agreement = self.one_agreement(spec, service).await?;
        let running = match self
            .deploy_service(service, network, &me.identity.to_string(), agreement)
            .await
        {
            Ok(running) => running,
            Err((agreement, error)) => {
                let _ = terminate(&self.client, &agreement.agreement_id).await;
                return Err(error);
            }
        };
        let mut report = ServiceReport {
            provider_name: running.agreement.provider_name.clone(),
            ..ServiceReport::default()
        };
        let (connections_tx, mut connections_rx) = mpsc::unbounded_channel::<()>();
        let mut forwards = tokio::task::JoinSet::new();
        for (publish, listener) in service.publish.iter().zip(listeners) {
            let (url, key) = self
                .client
                .tcp_socket_url(&network.id, PROVIDER_IP, publish.port);
            forwards.spawn(accept_loop(
                listener,
                url,
                key.to_string(),
                connections_tx.clone(),
            ));
        }
        self.events.emit(Event::ServiceReady {
            provider_name: running.agreement.provider_name.clone(),
            forwards: service
                .publish
                .iter()
                .map(|publish| format!("{} -> {PROVIDER_IP}:{}", publish.listen, publish.port))
                .collect(),
        });
        {
            let command = self.run_command(&running, &service.command);
            tokio::pin!(command);
            tokio::pin!(stop);
            let mut command_running = true;
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    ended = &mut command, if command_running => {
                        command_running = false;
                        let failed = ended != COMMAND_ENDED;
                        report.command_ended = Some(ended);
                        // A command that daemonized (httpd, nginx) ended well:
                        // its service is still there to forward to.
                        if failed {
                            break;
                        }
                        self.events.emit(Event::ServiceCommandEnded {
                            provider_name: running.agreement.provider_name.clone(),
                        });
                    }
                    Some(()) = connections_rx.recv() => report.connections += 1,
                }
            }
        }
        forwards.abort_all();
        while connections_rx.try_recv().is_ok() {
            report.connections += 1;
        }
        self.end_service(running).await;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Negotiate until one agreement is signed (or the offer timeout passes).
    async fn one_agreement(
        &self,
        spec: &DemandSpec,
        service: &ServiceSpec,
    ) -> Result<SignedAgreement> {
        let demand = self.demand(spec);
        self.events.emit(Event::DemandPublished {
            subnet: spec.subnet.clone(),
            runtime: spec.runtime.runtime_name().into(),
        });
        let options = JobOptions {
            max_workers: 1,
            max_attempts: 1,
            task_timeout: service.deploy_timeout,
            deploy_timeout: service.deploy_timeout,
            offer_timeout: service.offer_timeout,
            busy_timeout: service.offer_timeout,
            job_timeout: service.offer_timeout,
            expected_seconds: 3600.0,
            agreements_per_provider: 1,
        };
        let mut run = self.start_negotiation(spec, &demand, &options, self.budget);
        let _ = run.target.send(1);
        let signed = tokio::time::timeout(service.offer_timeout, run.signed.recv()).await;
        drop(run.target);
        drop(run.shutdown);
        let _ = tokio::time::timeout(Duration::from_secs(3), run.negotiator).await;
        // Agreements signed after the first are ended at once.
        while let Ok(extra) = run.signed.try_recv() {
            let _ = terminate(&self.client, &extra.agreement_id).await;
        }
        match signed {
            Ok(Some(agreement)) => {
                self.payments.track(
                    &agreement.agreement_id,
                    &agreement.provider_id,
                    &agreement.provider_name,
                    self.budget,
                );
                Ok(agreement)
            }
            _ => {
                let why = market::diagnose(&self.client, &spec.subnet, &demand, None).await;
                Err(RequestorError::NoOffers(format!(
                    "no provider with the vpn capability agreed within {:.0} s: {why}",
                    service.offer_timeout.as_secs_f64()
                )))
            }
        }
    }

    /// Make the provider a member, create the activity, deploy it into the
    /// network and start it. On failure the agreement comes back to be ended.
    async fn deploy_service(
        &self,
        service: &ServiceSpec,
        network: &Network,
        me: &str,
        agreement: SignedAgreement,
    ) -> std::result::Result<Running, (SignedAgreement, RequestorError)> {
        let steps = async {
            self.client
                .add_network_node(&network.id, &agreement.provider_id, PROVIDER_IP)
                .await?;
            let activity_id = self
                .client
                .create_activity(&agreement.agreement_id, 30.0)
                .await?;
            self.events.emit(Event::ActivityCreated {
                activity_id: activity_id.clone(),
                provider_name: agreement.provider_name.clone(),
            });
            let net = DeployNetwork {
                id: network.id.clone(),
                ip: NETWORK_IP.into(),
                mask: Some(NETWORK_MASK.into()),
                gateway: None,
                node_ip: PROVIDER_IP.into(),
                nodes: BTreeMap::from([
                    (REQUESTOR_IP.to_string(), me.to_string()),
                    (PROVIDER_IP.to_string(), agreement.provider_id.clone()),
                ]),
            };
            let script = [
                ExeScriptCommand::Deploy {
                    net: vec![net],
                    hosts: BTreeMap::new(),
                    hostname: None,
                    volumes: None,
                    env: Default::default(),
                    progress: None,
                },
                ExeScriptCommand::Start { args: Vec::new() },
            ];
            let batch = self.client.exec(&activity_id, &script).await?;
            let results = self
                .client
                .wait_batch(&activity_id, &batch, service.deploy_timeout)
                .await?;
            if !batch_ok(&results, script.len()) {
                let _ = self.client.destroy_activity(&activity_id).await;
                return Err(RequestorError::Job(format!(
                    "deploy failed on {}: {}",
                    agreement.provider_name,
                    first_error(&results).unwrap_or_else(|| "no result".into())
                )));
            }
            Ok(activity_id)
        }
        .await;
        match steps {
            Ok(activity_id) => Ok(Running {
                network: network.clone(),
                agreement,
                activity_id,
            }),
            Err(error) => Err((agreement, error)),
        }
    }

    /// Run the command; resolves (with what it said) only when it ends.
    async fn run_command(&self, running: &Running, command: &[String]) -> String {
        let Some((entry, args)) = command.split_first() else {
            return std::future::pending().await;
        };
        let script = [ExeScriptCommand::Run {
            entry_point: entry.clone(),
            args: args.to_vec(),
            capture: None,
        }];
        let batch = match self.client.exec(&running.activity_id, &script).await {
            Ok(batch) => batch,
            Err(error) => return format!("the command could not start: {error}"),
        };
        loop {
            match self
                .client
                .wait_batch(&running.activity_id, &batch, Duration::from_secs(60))
                .await
            {
                Ok(results) if results.iter().any(|result| result.is_batch_finished) => {
                    return match first_error(&results) {
                        Some(error) => format!("the command failed: {error}"),
                        None => COMMAND_ENDED.to_string(),
                    };
                }
                Ok(_) => continue,
                Err(error) if error.status().is_none() => {
                    return format!("lost the daemon while the command ran: {error}")
                }
                // A long-poll that timed out: wait again.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Destroy the activity, end the agreement and remember it for payment.
    async fn end_service(&self, running: Running) {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.destroy_activity(&running.activity_id),
        )
        .await;
        let _ = self
            .client
            .remove_network_node(&running.network.id, &running.agreement.provider_id)
            .await;
        if terminate(&self.client, &running.agreement.agreement_id).await {
            lock(&self.finished_agreements).push(running.agreement.agreement_id.clone());
            self.events.emit(Event::AgreementTerminated {
                agreement_id: running.agreement.agreement_id.clone(),
                provider_name: running.agreement.provider_name.clone(),
            });
        }
    }
}

/// Forward every connection `listener` accepts through a WebSocket of its own.
async fn accept_loop(
    listener: TcpListener,
    url: String,
    app_key: String,
    connections: mpsc::UnboundedSender<()>,
) {
    while let Ok((stream, peer)) = listener.accept().await {
        let _ = connections.send(());
        let (url, app_key) = (url.clone(), app_key.clone());
        tokio::spawn(async move {
            if let Err(error) = forward(stream, &url, &app_key).await {
                tracing::warn!(%peer, %error, "a forwarded connection failed");
            }
        });
    }
}

/// Pump bytes both ways between `stream` and a new WebSocket to `url` until
/// either side closes.
async fn forward(
    mut stream: TcpStream,
    url: &str,
    app_key: &str,
) -> std::result::Result<(), String> {
    let mut request = url
        .into_client_request()
        .map_err(|error| error.to_string())?;
    let bearer = format!("Bearer {app_key}")
        .parse()
        .map_err(|_| "the app-key is not a valid header value".to_string())?;
    request.headers_mut().insert("Authorization", bearer);
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|error| format!("cannot open {url}: {error}"))?;
    let (mut to_vm, mut from_vm) = socket.split();
    let (mut reader, mut writer) = stream.split();
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = reader
                .read(&mut buffer)
                .await
                .map_err(|error| error.to_string())?;
            if read == 0 {
                let _ = to_vm.send(Message::Close(None)).await;
                return Ok::<_, String>(());
            }
            to_vm
                .send(Message::Binary(buffer[..read].to_vec().into()))
                .await
                .map_err(|error| error.to_string())?;
        }
    };
    let downstream = async {
        while let Some(message) = from_vm.next().await {
            match message.map_err(|error| error.to_string())? {
                Message::Binary(bytes) => writer.write_all(&bytes).await,
                Message::Text(text) => writer.write_all(text.as_bytes()).await,
                Message::Close(_) => break,
                _ => Ok(()),
            }
            .map_err(|error| error.to_string())?;
        }
        let _ = writer.shutdown().await;
        Ok::<_, String>(())
    };
    // The connection is over when the VM side is: a client that half-closes
    // still gets the rest of the reply.
    tokio::pin!(upstream, downstream);
    tokio::select! {
        received = &mut downstream => received,
        sent = &mut upstream => {
            sent?;
            downstream.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_a_local_port_or_an_address_and_the_vm_port() {
        assert_eq!(
            "8080:80".parse::<Publish>(),
            Ok(Publish {
                listen: "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}")),
                port: 80
            })
        );
        assert_eq!(
            "0.0.0.0:9000:8000"
                .parse::<Publish>()
                .map(|p| (p.listen.to_string(), p.port)),
            Ok(("0.0.0.0:9000".to_string(), 8000))
        );
        for bad in ["80", "x:80", "8080:0", "8080:http", ""] {
            let error = bad.parse::<Publish>().unwrap_err();
            assert!(error.contains("LOCAL:PORT"), "{bad}: {error}");
        }
    }
}
