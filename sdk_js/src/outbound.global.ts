// IIFE entry (dist/outbound.min.js): tracks outbound link clicks via window.tracklane.
import { installOutbound } from "./outbound";

installOutbound();
