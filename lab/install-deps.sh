#!/usr/bin/env bash
# Installs the Debian packages govmilter, its tests and its loopback stack need, if missing.
set -euo pipefail

packages=(
  postfix              # the gateway under test (a private instance; /etc/postfix is left alone)
  clamav-daemon        # clamd
  clamav-testfiles     # test viruses for the antivirus tests
  clamav-milter        # the peer measured by make bench
  dnsmasq-base         # the DNS blocklist test zone
  libmilter-dev        # pymilter compiles against libmilter
  libmagic1            # python-magic
  swaks                # the README's test message
  redis-server         # forwarding memory and rate-limit buckets shared by nodes (and redis-cli: bench)
  prometheus           # promtool checks the alerting rules
  systemd              # systemd-analyze checks the service unit
  poppler-utils        # pdftotext: the text of attached PDFs (content rules with target = "document")
  python3-venv
  python3-dev          # make deb: pymilter compiles against Debian's Python 3.11 in the package's venv
  acl                  # setfacl: the package gives the service read access to the officers' rule files
  gcc                  # make deb: compiles pymilter's C extension
  genisoimage          # tests: real ISO 9660 and UDF images for the disk-image true-type rule
  dosfstools           # tests: mkfs.vfat makes a FAT floppy image (.img) for the same rule
  zip                  # tests: Info-ZIP's zip, an archiver's own zip of an ISO image (in_archives)
  libmail-dkim-perl    # tests: Mail::DKIM, an independent (Perl) verifier of our DKIM signatures
  libpq5               # psycopg's libpq: the decision history on PostgreSQL ([history] url)
  postgresql           # tests: a private PostgreSQL server on loopback for the history store
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix must not configure the machine's own mail system: tests run a private instance
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
