#!/usr/bin/env bash
# Installs SyTest's Perl dependencies from Debian's packages. Idempotent: does
# nothing when every package is already installed. Run as root (or via sudo).
#
# Two modules are not in Debian:
#   Crypt::Ed25519            — sytest-compat/perl-shims has a stand-in over
#                               CryptX; run.sh puts it on PERL5LIB.
#   Net::Async::HTTP::Server  — version 0.09 or later is needed and must be
#                               provided by hand (see README.md); this script
#                               only checks for it.
set -euo pipefail

packages=(
    libio-async-perl libnet-async-http-perl libio-async-ssl-perl libjson-perl
    libyaml-libyaml-perl libfuture-perl libstruct-dumb-perl liblist-utilsby-perl
    libmodule-pluggable-perl libclass-method-modifiers-perl libdata-dump-perl
    libfile-slurper-perl libemail-mime-perl libemail-address-xs-perl
    libdigest-hmac-perl libhttp-message-perl liburi-perl libnet-ssleay-perl
    libio-socket-ssl-perl libdbi-perl libdbd-pg-perl libcryptx-perl
    libmetrics-any-perl openssl
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! PERL5LIB="${SYTEST_PERL5LIB:+$SYTEST_PERL5LIB:}${PERL5LIB:-}" perl -MNet::Async::HTTP::Server=0.09 -e 1 2>/dev/null; then
    echo "note: Net::Async::HTTP::Server >= 0.09 is not on PERL5LIB/SYTEST_PERL5LIB;" \
         "see sytest-compat/README.md" >&2
fi
