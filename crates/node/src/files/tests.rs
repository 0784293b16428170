//! Tests of the CNI conflist's installation.

use super::install_cni_conflist;

#[test]
fn flannel_cni_conf_is_installed_in_place_of_the_generated_conflist() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let own = dir.path().join("my.conflist");
    let text = "{\"cniVersion\":\"1.0.0\",\"name\":\"mine\",\"plugins\":[{\"type\":\"ptp\"}]}\n";
    std::fs::write(&own, text).expect("written");
    let net_d = dir.path().join("net.d");
    let changed =
        install_cni_conflist(&net_d, Some(&own), || "generated".to_owned()).expect("installed");
    assert!(changed);
    let installed = net_d.join("10-weft.conflist");
    assert_eq!(std::fs::read_to_string(&installed).expect("read"), text);
    // Installing the same file again changes nothing.
    assert!(!install_cni_conflist(&net_d, Some(&own), || "generated".to_owned()).expect("ok"));
}

#[test]
fn without_flannel_cni_conf_the_generated_conflist_is_installed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let net_d = dir.path().join("net.d");
    assert!(install_cni_conflist(&net_d, None, || "generated\n".to_owned()).expect("installed"));
    assert_eq!(
        std::fs::read_to_string(net_d.join("10-weft.conflist")).expect("read"),
        "generated\n"
    );
}

#[test]
fn a_missing_flannel_cni_conf_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing = dir.path().join("gone.conflist");
    let net_d = dir.path().join("net.d");
    let err = install_cni_conflist(&net_d, Some(&missing), || "generated".to_owned())
        .expect_err("nothing to install");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(!net_d.join("10-weft.conflist").exists());
}
