//! The multi-rank flags (`--ulysses-degree`, `--cfg-parallel`, `--devices`) turned into a validated
//! [`ParallelConfig`], and the decision of how this process takes part ([`Launch`]): alone, as the
//! supervisor of one worker per rank, or as one rank placed by torchrun-style variables.

use super::error::{Result, config_error};

/// The command-line flags, for `#[command(flatten)]` in a binary's arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ParallelArgs {
    /// Ulysses sequence-parallel degree: ranks that split each branch's tokens (must divide the
    /// model's attention heads).
    #[arg(long, default_value_t = 1)]
    pub ulysses_degree: usize,
    /// Run the conditional and unconditional guidance branches on two rank groups (doubles the
    /// world size).
    #[arg(long)]
    pub cfg_parallel: bool,
    /// GPUs of this host, one per local rank, e.g. `0,1,2,3` (default: 0, 1, … in rank order).
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<usize>>,
}

/// A validated rank layout: `world_size = ulysses_degree × (2 with cfg_parallel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelConfig {
    /// Ranks per guidance branch; each holds `1/ulysses_degree` of the tokens.
    pub ulysses_degree: usize,
    /// The two guidance branches run on separate rank groups.
    pub cfg_parallel: bool,
    /// Explicit GPUs of this host by local rank (`None`: GPU `i` for local rank `i`).
    pub devices: Option<Vec<usize>>,
}

impl ParallelConfig {
    /// Checks the flags on their own (no model, no devices needed).
    pub fn new(args: &ParallelArgs) -> Result<ParallelConfig> {
        if args.ulysses_degree == 0 {
            return Err(config_error(
                "--ulysses-degree 0: the degree is the number of ranks per branch",
                "pass --ulysses-degree 1 (one rank) or more",
            ));
        }
        if let Some(devices) = &args.devices {
            if devices.is_empty() {
                return Err(config_error(
                    "--devices is empty",
                    "list GPU indices, e.g. --devices 0,1",
                ));
            }
            let mut sorted = devices.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(config_error(
                    format!("--devices lists GPU {} twice", pair[0]),
                    "give each rank its own GPU",
                ));
            }
        }
        Ok(ParallelConfig {
            ulysses_degree: args.ulysses_degree,
            cfg_parallel: args.cfg_parallel,
            devices: args.devices.clone(),
        })
    }

    /// A single rank (no flags given).
    pub fn single() -> ParallelConfig {
        ParallelConfig {
            ulysses_degree: 1,
            cfg_parallel: false,
            devices: None,
        }
    }

    /// Number of ranks in the run.
    pub fn world_size(&self) -> usize {
        self.ulysses_degree * if self.cfg_parallel { 2 } else { 1 }
    }

    /// Whether more than one rank takes part.
    pub fn is_parallel(&self) -> bool {
        self.world_size() > 1
    }

    /// Refuses a degree that does not divide the model's attention heads, naming the degrees that do.
    pub fn check_heads(&self, num_heads: usize) -> Result<()> {
        if num_heads.is_multiple_of(self.ulysses_degree) {
            return Ok(());
        }
        let working: Vec<String> = (1..=num_heads)
            .filter(|d| num_heads.is_multiple_of(*d))
            .map(|d| d.to_string())
            .collect();
        Err(config_error(
            format!(
                "--ulysses-degree {}: the model has {num_heads} attention heads, which do not split evenly over {} ranks",
                self.ulysses_degree, self.ulysses_degree
            ),
            format!(
                "use a degree that divides {num_heads}: {}",
                working.join(", ")
            ),
        ))
    }

    /// Refuses `--cfg-parallel` when the request has no unconditional branch (guidance 1).
    pub fn check_guidance(&self, has_unconditional_branch: bool) -> Result<()> {
        if self.cfg_parallel && !has_unconditional_branch {
            return Err(config_error(
                "--cfg-parallel: guidance is off (scale 1), so there is no unconditional branch to put on a second rank group",
                "drop --cfg-parallel, or set --guidance above 1",
            ));
        }
        Ok(())
    }

    /// The GPU of `local_rank`; refuses more local ranks than GPUs (`available`: GPUs this host
    /// has, when known).
    pub fn device_for(
        &self,
        local_rank: usize,
        local_world_size: usize,
        available: Option<usize>,
    ) -> Result<usize> {
        let device = match &self.devices {
            Some(devices) => {
                if local_world_size > devices.len() {
                    return Err(config_error(
                        format!(
                            "{local_world_size} ranks on this host but --devices lists {} GPU{}",
                            devices.len(),
                            if devices.len() == 1 { "" } else { "s" }
                        ),
                        format!(
                            "list {local_world_size} GPUs in --devices, or lower --ulysses-degree / drop --cfg-parallel"
                        ),
                    ));
                }
                devices[local_rank]
            }
            None => local_rank,
        };
        if let Some(available) = available {
            let needed = match &self.devices {
                Some(devices) => devices[..local_world_size]
                    .iter()
                    .max()
                    .map_or(0, |d| d + 1),
                None => local_world_size,
            };
            if needed > available {
                return Err(config_error(
                    format!(
                        "{local_world_size} ranks need GPU{} up to index {} but this host has {available} GPU{}",
                        if local_world_size == 1 { "" } else { "s" },
                        needed - 1,
                        if available == 1 { "" } else { "s" }
                    ),
                    "lower --ulysses-degree or drop --cfg-parallel so that ranks ≤ GPUs, or fix --devices",
                ));
            }
        }
        Ok(device)
    }
}

/// `generate`'s checks of the multi-rank flags before any model loads: the degree divides
/// `num_heads`, `--cfg-parallel` has an unconditional branch (`guided`), the ranks fit the GPUs
/// (`cuda`), `--devices` only with CUDA (docs/DESIGN.md, "Multi-GPU").
pub fn check_generate(
    args: &ParallelArgs,
    num_heads: usize,
    guided: bool,
    cuda: bool,
) -> Result<ParallelConfig> {
    let config = ParallelConfig::new(args)?;
    if config.devices.is_some() && !cuda {
        return Err(config_error(
            "--devices selects GPUs, but --backend is cpu",
            "drop --devices, or add --backend cuda",
        ));
    }
    config.check_heads(num_heads)?;
    config.check_guidance(guided)?;
    if cuda {
        config.device_for(0, config.world_size(), None)?;
        let available = super::nccl::device_count().ok();
        config.device_for(0, config.world_size(), available)?;
    }
    Ok(config)
}

/// How this process takes part in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// World size 1: run in this process, no communication.
    Single,
    /// World size > 1 and no rank variables: start one worker per rank on this host and supervise.
    Supervise {
        /// Ranks to start.
        world_size: usize,
    },
    /// One rank of a larger run (a supervised worker, or started by torchrun on any host).
    Rank(RankEnvironment),
}

/// A rank's place, from torchrun's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnvironment {
    /// Global rank (`RANK`).
    pub rank: usize,
    /// Global world size (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rank on this host (`LOCAL_RANK`): picks the GPU.
    pub local_rank: usize,
    /// Ranks on this host (`LOCAL_WORLD_SIZE`, default `WORLD_SIZE`).
    pub local_world_size: usize,
    /// Rank 0's host (`MASTER_ADDR`).
    pub master_addr: String,
    /// Rank 0's rendezvous port (`MASTER_PORT`, or the next one under torchrun's agent store).
    pub master_port: u16,
}

/// Variable names torchrun sets (and the supervisor sets for its workers).
pub mod variables {
    /// Global rank.
    pub const RANK: &str = "RANK";
    /// Global world size.
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    /// Rank on this host.
    pub const LOCAL_RANK: &str = "LOCAL_RANK";
    /// Ranks on this host.
    pub const LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
    /// Rank 0's host.
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    /// Rank 0's rendezvous port.
    pub const MASTER_PORT: &str = "MASTER_PORT";
    /// `True` when torchrun's agent serves its store at `MASTER_PORT` (rendezvous uses the next port).
    pub const TORCHELASTIC_USE_AGENT_STORE: &str = "TORCHELASTIC_USE_AGENT_STORE";
    /// Set by the supervisor on rank 0 alone (with `MASTER_PORT=0`): listen on a port of your
    /// own choosing and write it to this file. A free port picked by the supervisor and handed
    /// over could be taken by another process before rank 0 binds it.
    pub const RENDEZVOUS_PORT_FILE: &str = "SKYREELS_RENDEZVOUS_PORT_FILE";
}

impl Launch {
    /// Decides from the configuration and the environment (`lookup` reads a variable).
    pub fn decide(
        config: &ParallelConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Launch> {
        let world_size = config.world_size();
        let Some(rank_text) = lookup(variables::RANK) else {
            return Ok(if world_size == 1 {
                Launch::Single
            } else {
                Launch::Supervise { world_size }
            });
        };
        let number = |name: &str, text: Option<String>| -> Result<usize> {
            let text = text.ok_or_else(|| {
                config_error(
                    format!("RANK is set but {name} is not"),
                    "launch with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or unset RANK to let skyreels start its own ranks",
                )
            })?;
            text.trim().parse().map_err(|_| {
                config_error(
                    format!("{name}={text:?} is not a number"),
                    format!("set {name} to a non-negative integer"),
                )
            })
        };
        let rank = number(variables::RANK, Some(rank_text))?;
        let environment_world = number(variables::WORLD_SIZE, lookup(variables::WORLD_SIZE))?;
        if environment_world != world_size {
            return Err(config_error(
                format!(
                    "WORLD_SIZE={environment_world} but --ulysses-degree {}{} makes {world_size} rank{}",
                    config.ulysses_degree,
                    if config.cfg_parallel {
                        " --cfg-parallel"
                    } else {
                        ""
                    },
                    if world_size == 1 { "" } else { "s" }
                ),
                "launch as many processes as ulysses degree × (2 with --cfg-parallel), or change the flags",
            ));
        }
        if rank >= world_size {
            return Err(config_error(
                format!("RANK={rank} but WORLD_SIZE={world_size}"),
                "ranks are 0 … WORLD_SIZE-1",
            ));
        }
        let local_rank = number(variables::LOCAL_RANK, lookup(variables::LOCAL_RANK))?;
        let local_world_size = match lookup(variables::LOCAL_WORLD_SIZE) {
            Some(text) => number(variables::LOCAL_WORLD_SIZE, Some(text))?,
            None => world_size,
        };
        if local_rank >= local_world_size {
            return Err(config_error(
                format!("LOCAL_RANK={local_rank} but LOCAL_WORLD_SIZE={local_world_size}"),
                "local ranks are 0 … LOCAL_WORLD_SIZE-1",
            ));
        }
        let master_addr = lookup(variables::MASTER_ADDR).ok_or_else(|| {
            config_error(
                "RANK is set but MASTER_ADDR is not",
                "set MASTER_ADDR to rank 0's host name or address",
            )
        })?;
        let port = number(variables::MASTER_PORT, lookup(variables::MASTER_PORT))?;
        // torchrun's agent already serves its own store at MASTER_PORT: use the next port.
        let port = if lookup(variables::TORCHELASTIC_USE_AGENT_STORE).as_deref() == Some("True") {
            port + 1
        } else {
            port
        };
        let reports_its_port = lookup(variables::RENDEZVOUS_PORT_FILE).is_some() && rank == 0;
        let master_port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0 || reports_its_port)
            .ok_or_else(|| {
                config_error(
                    format!("MASTER_PORT={port} is not a TCP port"),
                    "set MASTER_PORT to a free port (1-65535) on rank 0's host",
                )
            })?;
        Ok(Launch::Rank(RankEnvironment {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr,
            master_port,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(degree: usize, cfg: bool, devices: Option<Vec<usize>>) -> ParallelConfig {
        ParallelConfig::new(&ParallelArgs {
            ulysses_degree: degree,
            cfg_parallel: cfg,
            devices,
        })
        .unwrap()
    }

    fn message(error: super::super::ParallelError) -> String {
        error.to_string()
    }

    #[test]
    fn world_size_is_degree_times_branch_groups() {
        assert_eq!(config(1, false, None).world_size(), 1);
        assert_eq!(config(4, false, None).world_size(), 4);
        assert_eq!(config(4, true, None).world_size(), 8);
        assert!(!config(1, false, None).is_parallel());
        assert!(config(1, true, None).is_parallel());
    }

    #[test]
    fn a_degree_that_does_not_divide_the_heads_names_the_ones_that_do() {
        let error = message(config(5, false, None).check_heads(12).unwrap_err());
        assert_eq!(
            error,
            "--ulysses-degree 5: the model has 12 attention heads, which do not split evenly over 5 ranks\n  fix: use a degree that divides 12: 1, 2, 3, 4, 6, 12"
        );
        assert!(config(8, true, None).check_heads(40).is_ok());
        assert!(config(3, false, None).check_heads(40).is_err());
    }

    #[test]
    fn bad_flags_are_refused() {
        let zero = ParallelConfig::new(&ParallelArgs {
            ulysses_degree: 0,
            ..Default::default()
        });
        assert!(message(zero.unwrap_err()).contains("--ulysses-degree 0"));
        let twice = ParallelConfig::new(&ParallelArgs {
            ulysses_degree: 2,
            cfg_parallel: false,
            devices: Some(vec![1, 1]),
        });
        assert!(message(twice.unwrap_err()).contains("GPU 1 twice"));
        let no_branch = config(2, true, None).check_guidance(false).unwrap_err();
        assert!(message(no_branch).contains("drop --cfg-parallel"));
        assert!(config(2, true, None).check_guidance(true).is_ok());
    }

    #[test]
    fn more_ranks_than_devices_are_refused() {
        let listed = config(2, true, Some(vec![0, 1]));
        assert_eq!(
            message(listed.device_for(0, 4, None).unwrap_err()),
            "4 ranks on this host but --devices lists 2 GPUs\n  fix: list 4 GPUs in --devices, or lower --ulysses-degree / drop --cfg-parallel"
        );
        let implicit = config(4, false, None);
        assert_eq!(
            message(implicit.device_for(0, 4, Some(2)).unwrap_err()),
            "4 ranks need GPUs up to index 3 but this host has 2 GPUs\n  fix: lower --ulysses-degree or drop --cfg-parallel so that ranks ≤ GPUs, or fix --devices"
        );
        let high_index = config(2, false, Some(vec![0, 7]));
        assert!(high_index.device_for(1, 2, Some(4)).is_err());
        assert_eq!(high_index.device_for(1, 2, Some(8)).unwrap(), 7);
        assert_eq!(implicit.device_for(3, 4, Some(4)).unwrap(), 3);
    }

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn launch_follows_the_rank_variables() {
        let two = config(2, false, None);
        assert_eq!(
            Launch::decide(&config(1, false, None), environment(&[])).unwrap(),
            Launch::Single
        );
        assert_eq!(
            Launch::decide(&two, environment(&[])).unwrap(),
            Launch::Supervise { world_size: 2 }
        );
        let torchrun = environment(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("LOCAL_WORLD_SIZE", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ]);
        assert_eq!(
            Launch::decide(&two, torchrun).unwrap(),
            Launch::Rank(RankEnvironment {
                rank: 1,
                world_size: 2,
                local_rank: 0,
                local_world_size: 1,
                master_addr: "node0".into(),
                master_port: 29500,
            })
        );
    }

    #[test]
    fn under_torchruns_agent_store_the_rendezvous_takes_the_next_port() {
        let agent = environment(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        match Launch::decide(&config(2, false, None), agent).unwrap() {
            Launch::Rank(environment) => assert_eq!(environment.master_port, 29501),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn port_zero_is_only_for_a_rank_zero_that_reports_its_port() {
        let two = config(2, false, None);
        let variables = |rank: &'static str, report: bool| {
            let mut variables = vec![
                ("RANK", rank),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", rank),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "0"),
            ];
            if report {
                variables.push(("SKYREELS_RENDEZVOUS_PORT_FILE", "/tmp/port"));
            }
            variables
        };
        match Launch::decide(&two, environment(&variables("0", true))).unwrap() {
            Launch::Rank(environment) => assert_eq!(environment.master_port, 0),
            other => panic!("{other:?}"),
        }
        for (rank, report) in [("0", false), ("1", true)] {
            let refused = Launch::decide(&two, environment(&variables(rank, report)));
            assert!(
                message(refused.unwrap_err()).contains("MASTER_PORT=0 is not a TCP port"),
                "rank {rank}, reporting {report}"
            );
        }
    }

    #[test]
    fn inconsistent_rank_variables_are_refused() {
        let four = config(2, true, None);
        let wrong_world = environment(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]);
        assert_eq!(
            message(Launch::decide(&four, wrong_world).unwrap_err()),
            "WORLD_SIZE=2 but --ulysses-degree 2 --cfg-parallel makes 4 ranks\n  fix: launch as many processes as ulysses degree × (2 with --cfg-parallel), or change the flags"
        );
        let missing = environment(&[("RANK", "0"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "0")]);
        assert!(message(Launch::decide(&four, missing).unwrap_err()).contains("MASTER_ADDR"));
        let bad_port = environment(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ]);
        assert!(
            message(Launch::decide(&four, bad_port).unwrap_err()).contains("MASTER_PORT=70000")
        );
        let high_rank = environment(&[("RANK", "4"), ("WORLD_SIZE", "4")]);
        assert!(message(Launch::decide(&four, high_rank).unwrap_err()).contains("RANK=4"));
    }
}
