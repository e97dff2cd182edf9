# The Device Bound Session Credentials browser test (scripts/check.d/51-dbsc-browser.sh):
# certutil, to make Chromium trust the test's TLS certificate through an NSS database, and
# socat, the TLS proxy in front of the demo. Chromium itself comes from 50-chromium.sh.
apt_install libnss3-tools socat openssl
