"""The node kinds containerlab knows, to tell a kind composens cannot run from a misspelt one.

Frozen from containerlab's Go source at commit 39ff2b7c (the schema's commit, tests/clab/schema/README.md): every
name a package under nodes/ registers (`kindNames` passed to `r.Register` from core/register.go), aliases included.
The schema's `kind` enum is not used: it lacks the aliases and lists kinds no package registers. containerlab
lower-cases a kind before looking it up (core/config.go createNodeCfg), and so does the importer.
"""

from __future__ import annotations

RUNNABLE = "linux"  # run as a plain container, with nothing of containerlab's own start-up
LAN_KINDS = ("bridge", "ovs-bridge")  # become x-composens.lans (a Linux bridge in the hub either way)
HOST = "host"  # a node standing for the host: its link ends are composens' host: ends

_NAMES = """
6wind_vsr arista_ceos arista_veos arrcus_arcos aruba_aoscx bridge c8000 ceos checkpoint_cloudguard ciena_saos
cisco_asav cisco_c8000 cisco_c8000v cisco_cat9kv cisco_csr1000v cisco_ftdv cisco_iol cisco_n9kv cisco_sdwan
cisco_vios cisco_xrd cisco_xrd_vrouter cisco_xrv cisco_xrv9k cjunosevolved crpd cumulus_cvx cvx dell_ftosv
dell_sonic ext-container f5_bigip-ve fdio_vpp fortinet_fortigate freebsd generic_vm host huawei_vrp
ipinfusion_ocnos juniper_cjunosevolved juniper_crpd juniper_csrx juniper_vjunosevolved juniper_vjunosrouter
juniper_vjunosswitch juniper_vmx juniper_vqfx juniper_vsrx k8s-kind keysight_ixia-c-one linux mikrotik_ros
nokia_srlinux nokia_sros nokia_srsim nvidia_cumulusvx openbsd openwrt ovs-bridge paloalto_panos plvision_sonic
rare sonic-vm sonic-vs spirent_stc srl veesix_osvbng vr-aoscx vr-arista_veos vr-aruba_aoscx vr-ciena_saos
vr-cisco_csr1000v vr-cisco_n9kv vr-cisco_xrv vr-cisco_xrv9k vr-csr vr-dell_ftosv vr-ftosv vr-juniper_vmx
vr-juniper_vqfx vr-juniper_vsrx vr-mikrotik_ros vr-n9kv vr-nokia_sros vr-paloalto_panos vr-pan vr-ros vr-sros
vr-veos vr-vmx vr-vqfx vr-vsrx vr-xrv vr-xrv9k vyosnetworks_vyos xrd
"""
KNOWN = frozenset(_NAMES.split())
