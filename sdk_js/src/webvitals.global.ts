// IIFE entry (dist/webvitals.min.js): sends the page's Web Vitals via window.tracklane.
import { installWebVitals } from "./webvitals";

installWebVitals();
