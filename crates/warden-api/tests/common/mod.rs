//! A fake, in-memory `VmService` and helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use warden_api::pb::{self, VmState};
use warden_api::{ApiError, Code, VmService};

/// VMs in a map. `DeleteVm` with `vm_id = "code:<connect name>"` fails with that code.
#[derive(Default)]
pub struct FakeVms {
    vms: Mutex<BTreeMap<String, pb::GetVmInfoResponse>>,
}

pub fn fake() -> Arc<dyn VmService> {
    Arc::new(FakeVms::default())
}

impl FakeVms {
    fn set_state(&self, vm_id: &str, from: &[VmState], to: VmState) -> Result<(), ApiError> {
        let mut vms = self.vms.lock().unwrap();
        let vm = vms
            .get_mut(vm_id)
            .ok_or_else(|| ApiError::not_found(format!("no VM {vm_id:?}")))?;
        if !from.contains(&vm.state()) {
            return Err(ApiError::failed_precondition(format!(
                "VM {vm_id:?} is {}",
                vm.state().as_str_name()
            )));
        }
        vm.set_state(to);
        if let Some(w) = vm.warden.as_mut() {
            w.set_state(to);
        }
        Ok(())
    }
}

#[warden_api::async_trait]
impl VmService for FakeVms {
    async fn create_vm(&self, req: pb::CreateVmRequest) -> Result<pb::CreateVmResponse, ApiError> {
        let config = req.config.unwrap_or_default();
        if config.cpu.as_ref().is_some_and(|c| c.vcpu_count > 32) {
            return Err(ApiError::invalid_argument("vcpu_count must be 1-32"));
        }
        let mut vms = self.vms.lock().unwrap();
        let vm_id = if req.vm_id.is_empty() {
            format!("vm-{}", vms.len() + 1)
        } else {
            req.vm_id
        };
        if vms.contains_key(&vm_id) {
            return Err(ApiError::already_exists(format!("VM {vm_id:?} exists")));
        }
        let info = pb::GetVmInfoResponse {
            vm_id: vm_id.clone(),
            state: VmState::Created as i32,
            config: Some(config),
            warden: Some(pb::VmDetails {
                state: VmState::Created as i32,
                created_at_unix_ms: 1_700_000_000_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        vms.insert(vm_id.clone(), info);
        Ok(pb::CreateVmResponse {
            vm_id,
            state: VmState::Created as i32,
            warden_state: VmState::Created as i32,
        })
    }

    async fn delete_vm(&self, req: pb::DeleteVmRequest) -> Result<pb::DeleteVmResponse, ApiError> {
        if let Some(code) = req.vm_id.strip_prefix("code:") {
            let code: Code = code
                .parse()
                .map_err(|e| ApiError::internal(format!("{e}")))?;
            return Err(ApiError::new(code, format!("forced {code}")));
        }
        let removed = self.vms.lock().unwrap().remove(&req.vm_id);
        match removed {
            Some(_) => Ok(pb::DeleteVmResponse { success: true }),
            None => Err(ApiError::not_found(format!("no VM {:?}", req.vm_id))),
        }
    }

    async fn boot_vm(&self, req: pb::BootVmRequest) -> Result<pb::BootVmResponse, ApiError> {
        self.set_state(
            &req.vm_id,
            &[VmState::Created, VmState::Shutdown],
            VmState::Running,
        )?;
        Ok(pb::BootVmResponse {
            success: true,
            state: VmState::Running as i32,
            warden_state: VmState::Running as i32,
        })
    }

    async fn shutdown_vm(
        &self,
        req: pb::ShutdownVmRequest,
    ) -> Result<pb::ShutdownVmResponse, ApiError> {
        self.set_state(
            &req.vm_id,
            &[VmState::Running, VmState::Paused],
            VmState::Shutdown,
        )?;
        Ok(pb::ShutdownVmResponse {
            success: true,
            state: VmState::Shutdown as i32,
            warden_state: VmState::Shutdown as i32,
        })
    }

    async fn pause_vm(&self, req: pb::PauseVmRequest) -> Result<pb::PauseVmResponse, ApiError> {
        self.set_state(&req.vm_id, &[VmState::Running], VmState::Paused)?;
        Ok(pb::PauseVmResponse {
            success: true,
            state: VmState::Paused as i32,
            warden_state: VmState::Paused as i32,
        })
    }

    async fn resume_vm(&self, req: pb::ResumeVmRequest) -> Result<pb::ResumeVmResponse, ApiError> {
        self.set_state(&req.vm_id, &[VmState::Paused], VmState::Running)?;
        Ok(pb::ResumeVmResponse {
            success: true,
            state: VmState::Running as i32,
            warden_state: VmState::Running as i32,
        })
    }

    async fn reboot_vm(&self, req: pb::RebootVmRequest) -> Result<pb::RebootVmResponse, ApiError> {
        self.set_state(&req.vm_id, &[VmState::Running], VmState::Running)?;
        Ok(pb::RebootVmResponse {
            success: true,
            state: VmState::Running as i32,
            warden_state: VmState::Running as i32,
        })
    }

    async fn get_vm_info(
        &self,
        req: pb::GetVmInfoRequest,
    ) -> Result<pb::GetVmInfoResponse, ApiError> {
        let vms = self.vms.lock().unwrap();
        let vm = vms
            .get(&req.vm_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no VM {:?}", req.vm_id)))?;
        Ok(vm)
    }

    async fn list_vms(&self, _req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse, ApiError> {
        let vms: Vec<pb::VmInfo> = self
            .vms
            .lock()
            .unwrap()
            .values()
            .map(|v| pb::VmInfo {
                vm_id: v.vm_id.clone(),
                state: v.state,
                warden: v.warden.clone(),
                ..Default::default()
            })
            .collect();
        Ok(pb::ListVmsResponse {
            total_count: vms.len() as i32,
            vms,
            next_page_token: String::new(),
        })
    }

    async fn watch_vms(
        &self,
        req: pb::WatchVmsRequest,
    ) -> Result<warden_api::VmEventStream, ApiError> {
        if req.vm_id == "none" {
            return Err(ApiError::not_found("no VM \"none\""));
        }
        let events: Vec<Result<pb::WatchVmsResponse, ApiError>> = self
            .vms
            .lock()
            .unwrap()
            .values()
            .map(|v| {
                Ok(pb::WatchVmsResponse {
                    vm_id: v.vm_id.clone(),
                    new_state: v.state,
                    reason: "current".into(),
                    ..Default::default()
                })
            })
            .collect();
        Ok(Box::pin(tokio_stream::iter(events)))
    }
}

/// Serves `router` on 127.0.0.1:0 in the background.
pub async fn spawn_tcp(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}
