#!/usr/bin/env bash
# A throwaway Orthanc (Debian's orthanc + orthanc-dicomweb) on 127.0.0.1 for the PACS
# tests, and dcmtk's storescu as an independent C-STORE client. Sourced by .ci/run:
#   orthanc_install            install the packages once (quiet; sudo only when not root)
#   orthanc_start DIR          generated config, free loopback ports, basic auth with a
#                              random password; exports GLANDSEG_ORTHANC_URL (DICOMweb
#                              root), GLANDSEG_ORTHANC_USER, GLANDSEG_ORTHANC_PASSWORD,
#                              GLANDSEG_ORTHANC_DICOM (AET@127.0.0.1:PORT)
#   orthanc_stop               stop it (called from the caller's trap)

orthanc_install() {
    local need=()
    [ -x /usr/sbin/Orthanc ] || need+=(orthanc)
    dpkg -s orthanc-dicomweb >/dev/null 2>&1 || need+=(orthanc-dicomweb)
    command -v storescu >/dev/null || need+=(dcmtk)
    [ ${#need[@]} -eq 0 ] && return 0
    local SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "   installing ${need[*]} (apt)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # policy-rc.d keeps the package from starting the system-wide Orthanc service.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
    # The package's own service stays off: the tests run their own instance.
    if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
        $SUDO systemctl stop orthanc || true
    fi
}

_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ORTHANC_PID=""
orthanc_start() {
    local dir="$1"
    mkdir -p "$dir/db"
    # The plugin's path from the package's file list (no pipes: set -o pipefail).
    local plugin="" f
    for f in $(dpkg -L orthanc-dicomweb); do
        case "$f" in
            *libOrthancDicomWeb.so) plugin=$f ;;
            *libOrthancDicomWeb.so.*) [ -n "$plugin" ] || plugin=$f ;;
        esac
    done
    [ -n "$plugin" ] || { echo "orthanc-dicomweb: no libOrthancDicomWeb.so in its file list"; return 1; }
    local http dicom password
    http=$(_free_port)
    dicom=$(_free_port)
    password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
    cat > "$dir/orthanc.json" <<JSON
{
  "Name": "glandseg-ci",
  "StorageDirectory": "$dir/db",
  "IndexDirectory": "$dir/db",
  "HttpPort": $http,
  "DicomPort": $dicom,
  "DicomAet": "ORTHANC",
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": { "glandseg": "$password" },
  "StableAge": 2,
  "DicomAlwaysAllowStore": true,
  "DicomCheckCalledAet": false,
  "HttpTimeout": 60,
  "Plugins": [ "$plugin" ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": false }
}
JSON
    /usr/sbin/Orthanc "$dir/orthanc.json" >"$dir/orthanc.log" 2>&1 &
    ORTHANC_PID=$!
    for _ in $(seq 1 60); do
        if curl -sf -u "glandseg:$password" "http://127.0.0.1:$http/system" >/dev/null 2>&1; then
            break
        fi
        if ! kill -0 "$ORTHANC_PID" 2>/dev/null; then
            echo "Orthanc did not start:"; tail -20 "$dir/orthanc.log"; return 1
        fi
        sleep 0.5
    done
    curl -sf -u "glandseg:$password" "http://127.0.0.1:$http/dicom-web/studies" >/dev/null || {
        echo "Orthanc's DICOMweb plugin does not answer:"; tail -20 "$dir/orthanc.log"; return 1; }
    export GLANDSEG_ORTHANC_URL="http://127.0.0.1:$http/dicom-web"
    export GLANDSEG_ORTHANC_USER="glandseg"
    export GLANDSEG_ORTHANC_PASSWORD="$password"
    export GLANDSEG_ORTHANC_DICOM="ORTHANC@127.0.0.1:$dicom"
    echo "   Orthanc $(curl -s -u "glandseg:$password" "http://127.0.0.1:$http/system" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Version"])') on 127.0.0.1:$http (DICOM $dicom)"
}

orthanc_stop() {
    if [ -n "$ORTHANC_PID" ] && kill -0 "$ORTHANC_PID" 2>/dev/null; then
        kill "$ORTHANC_PID" 2>/dev/null || true
        wait "$ORTHANC_PID" 2>/dev/null || true
    fi
    ORTHANC_PID=""
}
