//! Links through netlink (`rtnetlink`): the host bridge and its gateway address, the veth pair,
//! the bridge inside a VM's namespace. Each call opens its own netlink socket in the calling
//! thread's namespace and runs on a small runtime of its own, so callers may be threads that
//! joined a VM's namespace.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};

use super::{GuestAddr, NetError, NS_BRIDGE};

/// Runs `f` with a netlink handle on a thread of its own (which inherits the calling thread's
/// network namespace), so callers may be async tasks, drops, or threads inside a namespace.
fn run<T: Send + 'static, F>(what: &str, f: F) -> Result<T, NetError>
where
    F: AsyncFnOnce(Handle) -> Result<T, NetError> + Send + 'static,
{
    let what = what.to_owned();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| NetError::new("start netlink for", &what, e))?;
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| NetError::new("open netlink for", &what, e))?;
                let task = tokio::spawn(conn);
                let out = f(handle).await;
                task.abort();
                out
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetError::new(
                "run netlink for",
                "links",
                std::io::Error::other("thread panicked"),
            ))
        })
    })
}

async fn index(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(NetError::new("look up", name, e)),
    }
}

async fn must_index(handle: &Handle, name: &str) -> Result<u32, NetError> {
    index(handle, name).await?.ok_or_else(|| {
        NetError::new(
            "find",
            name,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })
}

async fn up(handle: &Handle, name: &str) -> Result<(), NetError> {
    let i = must_index(handle, name).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .map_err(|e| NetError::new("bring up", name, e))
}

async fn enslave(handle: &Handle, port: &str, bridge: u32) -> Result<(), NetError> {
    let i = must_index(handle, port).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(i).controller(bridge).build())
        .execute()
        .await
        .map_err(|e| NetError::new("attach to its bridge", port, e))
}

/// Host side of a bridged VM: the host bridge (created if missing, with the gateway address),
/// the veth pair, the peer moved into the VM's namespace, the host end attached and up.
pub fn host_side(
    host: &str,
    peer: &str,
    bridge: &str,
    guest: &GuestAddr,
    netns: &Path,
) -> Result<(), NetError> {
    let ns = std::fs::File::open(netns)
        .map_err(|e| NetError::new("open", netns.display().to_string(), e))?;
    let (host, peer, bridge, guest) = (host.to_owned(), peer.to_owned(), bridge.to_owned(), *guest);
    run(&host.clone(), async move |h: Handle| {
        let br = match index(&h, &bridge).await? {
            Some(i) => i,
            None => {
                // Another VM's start may create it at the same moment: EEXIST is that one.
                match h
                    .link()
                    .add(LinkBridge::new(&bridge).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if is_exists(&e) => {}
                    Err(e) => return Err(NetError::new("create bridge", &bridge, e)),
                }
                must_index(&h, &bridge).await?
            }
        };
        ensure_address(&h, br, &bridge, guest.gateway, guest.prefix_len).await?;
        up(&h, &bridge).await?;
        h.link()
            .add(LinkVeth::new(&host, &peer).build())
            .execute()
            .await
            .map_err(|e| NetError::new("create veth", &host, e))?;
        let p = must_index(&h, &peer).await?;
        h.link()
            .set(
                LinkUnspec::new_with_index(p)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| NetError::new("move into the VM's namespace", &peer, e))?;
        enslave(&h, &host, br).await?;
        up(&h, &host).await
    })
}

async fn ensure_address(
    h: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    let mut existing = h.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = existing
        .try_next()
        .await
        .map_err(|e| NetError::new("read addresses of", name, e))?
    {
        let has = msg.attributes.iter().any(|a| matches!(a, rtnetlink::packet_route::address::AddressAttribute::Address(std::net::IpAddr::V4(a)) if *a == addr));
        if has {
            return Ok(());
        }
    }
    match h.address().add(index, addr.into(), prefix).execute().await {
        Ok(()) => Ok(()),
        // Added by a concurrent start since we looked.
        Err(e) if is_exists(&e) => Ok(()),
        Err(e) => Err(NetError::new(format!("add {addr}/{prefix} to"), name, e)),
    }
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// Namespace side (run in a thread that joined the VM's namespace): `lo` and the TAP up; in
/// bridge mode a bridge joining the TAP and the veth peer.
pub fn namespace_side(tap: &str, peer: Option<&str>) -> Result<(), NetError> {
    let (tap, peer) = (tap.to_owned(), peer.map(str::to_owned));
    run(&tap.clone(), async move |h: Handle| {
        up(&h, "lo").await?;
        if let Some(peer) = &peer {
            h.link()
                .add(LinkBridge::new(NS_BRIDGE).build())
                .execute()
                .await
                .map_err(|e| NetError::new("create bridge", NS_BRIDGE, e))?;
            let br = must_index(&h, NS_BRIDGE).await?;
            enslave(&h, &tap, br).await?;
            enslave(&h, peer, br).await?;
            up(&h, peer).await?;
            up(&h, NS_BRIDGE).await?;
        }
        up(&h, &tap).await
    })
}

/// Deletes a link by name in the calling thread's namespace; a missing one is fine.
pub fn delete(name: &str) -> Result<(), NetError> {
    let name = name.to_owned();
    run(&name.clone(), async move |h: Handle| {
        match index(&h, &name).await? {
            Some(i) => match h.link().del(i).execute().await {
                Ok(()) => Ok(()),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
                Err(e) => Err(NetError::new("delete", &name, e)),
            },
            None => Ok(()),
        }
    })
}

/// Names of links in the calling thread's namespace that start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Result<Vec<String>, NetError> {
    let prefix = prefix.to_owned();
    run("links", async move |h: Handle| {
        let mut out = Vec::new();
        let mut links = h.link().get().execute();
        while let Some(msg) = links
            .try_next()
            .await
            .map_err(|e| NetError::new("list", "links", e))?
        {
            for a in &msg.attributes {
                if let rtnetlink::packet_route::link::LinkAttribute::IfName(n) = a {
                    if n.starts_with(&prefix) {
                        out.push(n.clone());
                    }
                }
            }
        }
        Ok(out)
    })
}
