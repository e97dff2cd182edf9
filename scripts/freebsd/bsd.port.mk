# A stub of the ports tree's Mk/bsd.port.mk for scripts/check.d/60-freebsd.sh: bmake on Debian
# parses the port's Makefile against it. It checks what the port must declare and prints
# the variables the real framework would act on; it builds nothing.

.for required in PORTNAME DISTVERSION CATEGORIES MASTER_SITES MAINTAINER COMMENT WWW LICENSE USES CARGO_CRATES LIB_DEPENDS USE_RC_SUBR
.  if !defined(${required}) || empty(${required})
.    error port Makefile: ${required} is not set
.  endif
.endfor
.if empty(USES:Mcargo)
.  error port Makefile: USES must include cargo
.endif
.if empty(LIB_DEPENDS:M*net/libzmq4)
.  error port Makefile: LIB_DEPENDS must name net/libzmq4 (CURVE comes from it)
.endif
.if empty(USE_RC_SUBR:Mcloakroomd)
.  error port Makefile: USE_RC_SUBR must install the cloakroomd rc.d script
.endif
.for path in ${CARGO_INSTALL_PATH}
.  if !exists(${SRCTOP}/${path}/Cargo.toml)
.    error port Makefile: CARGO_INSTALL_PATH names ${path}, which has no Cargo.toml
.  endif
.endfor

show:
	@echo PORTNAME=${PORTNAME} DISTVERSION=${DISTVERSION}
	@echo CARGO_CRATES=${CARGO_CRATES:[#]}
	@echo CARGO_INSTALL_PATH=${CARGO_INSTALL_PATH}
	@echo USE_RC_SUBR=${USE_RC_SUBR}
	@echo PLIST_SUB=${PLIST_SUB}
