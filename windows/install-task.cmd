@echo off
rem Starts trae-proxy at logon for the current user, with Windows' Task Scheduler.
rem Run once from the folder that holds trae-proxy.exe and config.yaml (no administrator
rem rights needed for the task itself; the hosts-file entry needs them, see docs/operations.md).
rem   install-task.cmd            create (or replace) the task and start it now
rem   schtasks /End /TN trae-proxy       stop it (ends the process; requests in flight are cut)
rem   schtasks /Delete /TN trae-proxy /F remove it
rem   trae-proxy.exe reload -c config.yaml  read config.yaml again (needs server.admin_bind)
setlocal
set "DIR=%~dp0"
schtasks /Create /F /TN "trae-proxy" /SC ONLOGON /RL LIMITED ^
  /TR "\"%DIR%trae-proxy.exe\" serve --config \"%DIR%config.yaml\"" || exit /b 1
schtasks /Run /TN "trae-proxy" || exit /b 1
echo trae-proxy starts at every logon; it runs now. Its log is in the console window it opens.
