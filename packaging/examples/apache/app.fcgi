#!/bin/sh
# app.fcgi: what the web server starts for the URL /app.fcgi (see the
# .htaccess next to this file).  Upload it next to .htaccess, make it
# executable (chmod 755), and put your own paths in the line below.
#
# fcgi-launch finds out by itself how Apache started it: with mod_fcgid
# it is a FastCGI server that stays up and runs app.cgi once per request;
# with plain mod_cgi it serves the one request and exits.  The same two
# lines work on both kinds of host.
#
# Options go before the "--", e.g. "--timeout 30" or "--env APP_ENV=live";
# after it come the program and its arguments.  Give fcgi-launch a
# PROGRAM, as here: do not upload fcgi-launch itself as app.fcgi, since it
# would then be asked to run its own SCRIPT_FILENAME, which it refuses.
exec /home/me/bin/fcgi-launch -- /home/me/app/app.cgi
