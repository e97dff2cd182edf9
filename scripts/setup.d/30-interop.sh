# cloakroom-interop's cross-checks against the real frameworks (crates/cloakroom-interop/tests):
# Flask, Pyramid and Django in target/venv (scripts/requirements.txt), and Rails 6.1's
# ActiveSupport and ActionPack from Debian. Sourced by scripts/test, after scripts/lib.sh.
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
venv_ready
apt_install ruby ruby-activesupport ruby-actionpack
