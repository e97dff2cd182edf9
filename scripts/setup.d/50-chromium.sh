# Headless Chromium and its driver from Debian for the real-browser test
# (scripts/check.d/50-browser.sh), and Node for playwright-core, which drives it. Never a
# browser download of playwright's own: the test uses /usr/bin/chromium.
apt_install chromium chromium-driver
# Node: Debian's when there is none (a NodeSource nodejs already bundles npm, and Debian's
# npm package conflicts with it).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
